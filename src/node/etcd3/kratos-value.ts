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
  const fields = [
    `"id":${quoted(instance.id)}`,
    `"name":${quoted(instance.name)}`,
    `"version":${quoted(instance.version)}`,
    `"metadata":${instance.metadata === undefined ? "null" : sortedMap(instance.metadata)}`,
    `"endpoints":[${instance.endpoints.map(quoted).join(",")}]`,
  ];
  // These characters only occur inside strings of the JSON text, so the
  // replacement cannot touch its structure.
  return `{${fields.join(",")}}`.replace(/[<>&\u2028\u2029]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/**
 * The map as a JSON object written by hand: an object would put keys that
 * look like array indexes ("9", "10") first, whatever order they came in.
 */
function sortedMap(map: Readonly<Record<string, string>>): string {
  const entries = Object.entries(map).map(([key, value]) => [wellFormed(key), wellFormed(value)] as const);
  entries.sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  return `{${entries.map(([key, value]) => `${JSON.stringify(key)}:${JSON.stringify(value)}`).join(",")}}`;
}

function quoted(text: string): string {
  return JSON.stringify(wellFormed(text));
}

/** A lone surrogate cannot be UTF-8 encoded; Go and Buffer.from both write U+FFFD for it. */
function wellFormed(text: string): string {
  return text.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD");
}
