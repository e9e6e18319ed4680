/** What one registration says about an instance: kratos' registry.ServiceInstance. */
export interface KratosInstance {
  readonly id: string;
  readonly name: string;
  readonly version: string;
  /** Written as null when absent, as Go writes a nil map. */
  readonly metadata: Readonly<Record<string, string>> | undefined;
  readonly endpoints: readonly string[];
}

/**
 * The value exactly as kratos' etcd registry writes it, byte for byte: Go's
 * json.Marshal of registry.ServiceInstance, i.e. fields in declaration order,
 * map keys sorted by their UTF-8 bytes, <, >, &, U+2028 and U+2029 escaped,
 * and invalid UTF-16 replaced by U+FFFD.
 */
export function kratosValue(instance: KratosInstance): string {
  const json = JSON.stringify({
    id: wellFormed(instance.id),
    name: wellFormed(instance.name),
    version: wellFormed(instance.version),
    metadata: instance.metadata === undefined ? null : sortedMap(instance.metadata),
    endpoints: instance.endpoints.map(wellFormed),
  });
  // These characters only occur inside strings of the JSON text, so the
  // replacement cannot touch its structure.
  return json.replace(/[<>&\u2028\u2029]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function sortedMap(map: Readonly<Record<string, string>>): Record<string, string> {
  const entries = Object.entries(map).map(([key, value]) => [wellFormed(key), wellFormed(value)] as const);
  entries.sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  return Object.fromEntries(entries);
}

/** A lone surrogate cannot be UTF-8 encoded; Go and Buffer.from both write U+FFFD for it. */
function wellFormed(text: string): string {
  return text.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD");
}
