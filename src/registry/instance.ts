import type { Endpoint } from "./endpoint.js";

/** A registered service instance, decoded and validated. */
export interface Instance {
  /** The registry key it was read from. */
  readonly key: string;
  readonly id: string;
  readonly name: string;
  readonly version: string;
  readonly metadata: Readonly<Record<string, string>>;
  /** Every usable endpoint, in registration order. */
  readonly endpoints: readonly Endpoint[];
}

/**
 * What a registry value describes, before validation: the shape of kratos'
 * `registry.ServiceInstance`. Custom decoders return this.
 */
export interface InstanceInit {
  readonly id?: string;
  readonly name?: string;
  readonly version?: string;
  readonly metadata?: Readonly<Record<string, string>> | null;
  /** URLs such as "grpc://10.0.0.7:9000" or "http://[::1]:8000". */
  readonly endpoints: readonly string[];
}

/** A registry entry that was not used, and why. */
export interface SkippedEntry {
  readonly key: string;
  readonly reason: string;
}
