/// <reference types="node" />
import * as http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import { markDelivery } from "../../transport/delivery.js";
import { guardAgainstFloods } from "./flood-guard.js";

/** How the HTTP/2 connection of a peer is kept (the names of connect-node's Http2SessionOptions). */
export interface ConnectionOptions {
  /** Options for node:http2's connect(): CA, client certificate, servername for grpcs peers. */
  readonly nodeOptions?: http2.ClientSessionOptions | http2.SecureClientSessionOptions;
  /** Send a PING this often while calls are open (default: never). */
  readonly pingIntervalMs?: number;
  /** Close the connection when a PING is not answered within this time (default 15,000). */
  readonly pingTimeoutMs?: number;
  /** Also PING while no call is open (default false). */
  readonly pingIdleConnection?: boolean;
  /** Close a connection that had no call for this long (default 15 minutes). */
  readonly idleConnectionTimeoutMs?: number;
  /**
   * Give up on a connection not established within this time (default 10,000):
   * its calls fail as never sent, so a peer that swallows packets costs calls
   * without a deadline 10 s instead of hanging them.
   */
  readonly connectTimeoutMs?: number;
}

/**
 * One HTTP/2 session and what the calls on it need to know to tell what
 * became of their request: whether it ever connected, the error that ended
 * it, and the last stream id a GOAWAY promised to process.
 */
export class Connection {
  /** Calls open on this session; it keeps the process alive only while there are some. */
  streams = 0;
  connected = false;
  /** The stream id up to which the server processes requests, from its GOAWAY. */
  goawayLastStreamId: number | undefined;
  error: Error | undefined;
  private lastActive = performance.now();
  private idleTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;

  constructor(
    readonly session: http2.ClientHttp2Session,
    address: string,
    private readonly options: ConnectionOptions,
    private readonly onGone: (connection: Connection) => void,
  ) {
    session.unref();
    // Without an error listener a connection error or GOAWAY on an idle session
    // would be an uncaught exception (connect-es #1768).
    session.on("error", (error) => (this.error ??= error));
    guardAgainstFloods(session, address, (error) => this.close(error));
    const connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    const connectTimer = setTimeout(() => this.close(new Error(`connection not established within ${connectTimeoutMs} ms`)), connectTimeoutMs).unref();
    // Established once the server's SETTINGS arrive: a peer that accepts TCP but never
    // speaks HTTP/2 (a frozen process) has processed nothing, and must not hang calls.
    session.once("remoteSettings", () => {
      this.connected = true;
      clearTimeout(connectTimer);
    });
    session.once("close", () => clearTimeout(connectTimer));
    session.on("goaway", (_code: number, lastStreamId: number) => {
      this.goawayLastStreamId = lastStreamId;
      this.onGone(this);
    });
    session.once("close", () => {
      this.stopTimers();
      this.onGone(this);
    });
    const interval = options.pingIntervalMs ?? Infinity;
    if (interval > 0 && Number.isFinite(interval)) {
      this.pingTimer = setInterval(() => this.ping(), interval).unref();
    }
  }

  /** Opens a stream; throws when the session can no longer take one (then the next call opens a new session). */
  request(headers: http2.OutgoingHttpHeaders): http2.ClientHttp2Stream {
    const stream = this.session.request(headers);
    if (this.streams++ === 0) {
      this.session.ref();
    }
    return stream;
  }

  /** Called once when a stream of this session closes. */
  release(): void {
    if (--this.streams === 0) {
      this.lastActive = performance.now();
      if (!this.session.destroyed) {
        this.session.unref();
      }
      this.armIdleTimer();
    }
  }

  close(error?: Error): void {
    this.stopTimers();
    if (!this.session.destroyed) {
      this.session.destroy(error);
    }
  }

  /** One timer per idle period, not per call: it re-arms itself for whatever time is left. */
  private armIdleTimer(): void {
    const timeoutMs = this.options.idleConnectionTimeoutMs ?? 15 * 60_000;
    if (this.idleTimer !== undefined || !Number.isFinite(timeoutMs) || this.session.closed || this.session.destroyed) {
      return;
    }
    const check = () => {
      this.idleTimer = undefined;
      if (this.streams > 0) {
        return;
      }
      const left = this.lastActive + timeoutMs - performance.now();
      if (left <= 0) {
        this.session.close();
      } else {
        this.idleTimer = setTimeout(check, left).unref();
      }
    };
    this.idleTimer = setTimeout(check, timeoutMs).unref();
  }

  private ping(): void {
    // A closing session (after GOAWAY) cannot ping: its calls drain without.
    if (this.session.closed || this.session.destroyed || !this.connected || (this.streams === 0 && this.options.pingIdleConnection !== true)) {
      return;
    }
    const timeoutMs = this.options.pingTimeoutMs ?? 15_000;
    const timeout = setTimeout(() => this.close(new Error(`no answer to an HTTP/2 PING within ${timeoutMs} ms`)), timeoutMs).unref();
    const sent = this.session.ping((error) => {
      clearTimeout(timeout);
      // ERR_HTTP2_PING_CANCEL: the session began closing meanwhile, which says nothing about the peer.
      if (error !== null && (error as { code?: string }).code !== "ERR_HTTP2_PING_CANCEL" && !this.session.destroyed) {
        this.close(error);
      }
    });
    if (!sent) {
      clearTimeout(timeout);
    }
  }

  private stopTimers(): void {
    clearTimeout(this.idleTimer);
    clearInterval(this.pingTimer);
    this.idleTimer = undefined;
    this.pingTimer = undefined;
  }
}

/**
 * The HTTP/2 connection of one peer: opened on the first call, opened anew
 * after the server sent GOAWAY or the connection was lost, unref'd while no
 * call is open so a Lambda handler or a CLI can exit.
 */
export class PeerConnection {
  private current: Connection | undefined;
  private readonly all = new Set<Connection>();
  private closed = false;

  constructor(
    private readonly url: string,
    private readonly options: ConnectionOptions,
  ) {}

  /** The connection new calls go on, opened now if there is none. */
  acquire(): Connection {
    const current = this.current;
    if (current !== undefined && !current.session.closed && !current.session.destroyed) {
      return current;
    }
    if (this.closed) {
      throw markDelivery(new ConnectError(`the transport of ${this.url} is closed`, Code.Unavailable), "unprocessed");
    }
    const session = http2.connect(this.url, this.options.nodeOptions);
    const connection = new Connection(session, this.url.replace(/^[a-z]+:\/\//, ""), this.options, (gone) => {
      if (this.current === gone) {
        this.current = undefined;
      }
      if (gone.session.closed || gone.session.destroyed) {
        this.all.delete(gone);
      }
    });
    this.all.add(connection);
    this.current = connection;
    return connection;
  }

  /** Destroys every connection: calls still open on them fail as lost. */
  close(): void {
    this.closed = true;
    this.current = undefined;
    for (const connection of this.all) {
      connection.close(new Error("the transport was closed"));
    }
    this.all.clear();
  }
}
