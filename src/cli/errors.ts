import { ConnectError } from "@connectrpc/connect";

/** 0 done, 1 the command failed (etcd, no instances), 2 the command line is wrong, 130 Ctrl-C before ls or pick finished. */
export const exitCode = { ok: 0, failure: 1, usage: 2, interrupted: 130 } as const;

/** A mistake on the command line: exit 2, with a pointer to the help. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message);
  }
}

/** The error as the one line an operator reads on stderr; the library's messages are already redacted. */
export function errorLine(error: unknown): string {
  const text = error instanceof ConnectError ? error.rawMessage : error instanceof Error ? error.message : String(error);
  const hint = error instanceof UsageError ? `; see connect-etcd-balancer ${error.command ? `${error.command} ` : ""}--help` : "";
  return `connect-etcd-balancer: ${text.replace(/\s*\n\s*/g, " ")}${hint}`;
}
