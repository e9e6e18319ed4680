import { Code, ConnectError } from "@connectrpc/connect";

/**
 * The caller's headers as a new Headers object. A header the Fetch API refuses
 * fails as InvalidArgument naming the header, never its value: the value
 * may be a credential, and the runtime's own message quotes it.
 */
export function requestHeader(init: HeadersInit | undefined): Headers {
  try {
    return new Headers(init);
  } catch {
    const entries: [string, string][] = Array.isArray(init) ? (init as [string, string][]) : Object.entries((init ?? {}) as Record<string, string>);
    const bad = entries.find(([name, value]) => !acceptedHeader(name, value));
    const which = bad === undefined ? "" : ` ${JSON.stringify(String(bad[0]).slice(0, 100))}`;
    throw new ConnectError(`invalid request header${which}: a header name or value the Fetch API does not accept (the value is not shown)`, Code.InvalidArgument);
  }
}

function acceptedHeader(name: string, value: string): boolean {
  try {
    new Headers([[name, value]]);
    return true;
  } catch {
    return false;
  }
}
