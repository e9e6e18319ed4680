// The part of workerd's "cloudflare:workers" module this example uses.
declare module "cloudflare:workers" {
  export const env: Record<string, unknown>;
  export function waitUntil(promise: Promise<unknown>): void;
}
