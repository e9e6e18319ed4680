/// <reference types="node" />
import type * as http2 from "node:http2";

/**
 * Control frames a peer may send per second before its connection is closed
 * as a flood. A sane server sends one SETTINGS frame per connection (and
 * rarely an update) and PINGs a few times per round trip at most (grpc-go's
 * keepalive and BDP estimator keep one ping outstanding); these limits are
 * far above that and far below what costs the client real CPU: a peer
 * flooding SETTINGS once took a whole 3 s deadline and 3 s of CPU. Node and
 * nghttp2 stop floods only when the acknowledgements pile up unsent, which a
 * fast loopback never lets happen.
 */
export const floodLimits = { settings: 100, ping: 1_000 } as const;

/**
 * Closes the session of a peer that sends SETTINGS or PING frames beyond
 * floodLimits within one second: its calls fail as a lost connection
 * (resent where the method allows). One counter pair per connection, nothing
 * per call.
 */
export function guardAgainstFloods(session: http2.ClientHttp2Session, address: string, close: (error: Error) => void): void {
  let windowStart = performance.now();
  const counts = { settings: 0, ping: 0 };
  const count = (kind: keyof typeof floodLimits) => {
    const now = performance.now();
    if (now - windowStart >= 1_000) {
      windowStart = now;
      counts.settings = 0;
      counts.ping = 0;
    }
    if (++counts[kind] > floodLimits[kind]) {
      const frame = kind === "settings" ? "SETTINGS" : "PING";
      close(new Error(`${address} sent more than ${floodLimits[kind]} ${frame} frames within a second: connection closed as a flood`));
    }
  };
  session.on("remoteSettings", () => count("settings"));
  session.on("ping", () => count("ping"));
}
