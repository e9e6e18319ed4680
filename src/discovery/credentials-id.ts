import type { EtcdAuth } from "./etcd-auth.js";
import { sha256Hex } from "./sha256.js";

/**
 * Random for each process (isolate): the ids below are worthless outside it,
 * so a Discovery key that reaches a log or a heap dump gives no offline
 * password guessing a start, as an unsalted hash would. Made on first use:
 * Workers refuse getRandomValues in global scope, where a Worker creates its
 * transport; Math.random, allowed there, is good enough for a salt.
 */
let salt: string | undefined;

function processSalt(): string {
  if (salt === undefined) {
    let bytes: Uint8Array;
    try {
      bytes = crypto.getRandomValues(new Uint8Array(16));
    } catch {
      bytes = Uint8Array.from({ length: 16 }, () => Math.floor(Math.random() * 256));
    }
    salt = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  }
  return salt;
}

/**
 * Names a user and password without keeping or revealing the password.
 * Equal credentials give equal ids, so warm invocations share one snapshot;
 * different passwords give different ids, so a wrong password fails even
 * while a right one has filled the cache. A salted hash needs no process-wide
 * table (which would keep every password ever used in plain text), and it
 * is computed synchronously because a Discovery key is needed at once.
 */
export function credentialsId(auth: EtcdAuth | undefined): string {
  if (auth === undefined) {
    return "";
  }
  // JSON keeps the fields apart: user "a:b" + "c" differs from "a" + "b:c".
  const hash = sha256Hex(new TextEncoder().encode(JSON.stringify([processSalt(), auth.username, auth.password])));
  return `${auth.username}#${hash}`;
}
