import { ConnectError } from "@connectrpc/connect";
import { SpanStatusCode, type Span } from "@opentelemetry/api";
import { outcomeAttributes, type RpcSystem } from "./attributes.js";

/** Ends an attempt's span once, however many ways the attempt is seen to end. */
export interface AttemptEnd {
  /** The peer answered: success, or the error the attempt failed with. */
  finish(error?: unknown): void;
  /** The caller stopped reading a stream: no status came back, and none went wrong. */
  abandon(): void;
}

export function attemptEnd(span: Span, system: RpcSystem): AttemptEnd {
  let ended = false;
  const endOnce = (record: () => void) => {
    if (!ended) {
      ended = true;
      record();
      span.end();
    }
  };
  return {
    finish: (error) =>
      endOnce(() => {
        const failure = error === undefined ? undefined : ConnectError.from(error);
        span.setAttributes(outcomeAttributes(system, failure));
        if (failure !== undefined) {
          span.recordException(failure);
          span.setStatus({ code: SpanStatusCode.ERROR, message: failure.message });
        }
      }),
    abandon: () => endOnce(() => {}),
  };
}
