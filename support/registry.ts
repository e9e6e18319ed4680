// Writes registrations into etcd exactly as go-kratos' contrib/registry/etcd
// does: key /microservices/<name>/<id>, the ServiceInstance JSON as value,
// attached to a 15 s lease that is kept alive until deregistration.

export interface KratosInstance {
  readonly id: string;
  readonly name: string;
  readonly version: string;
  readonly metadata: Record<string, string> | null;
  readonly endpoints: readonly string[];
}

export interface Registration {
  readonly key: string;
  /** Deletes the key and revokes its lease, like kratos' Deregister. */
  deregister(): Promise<void>;
}

const encode = (text: string) => Buffer.from(text).toString("base64");

/** One etcd v3 JSON-gateway request; throws with etcd's message on failure. */
export async function etcdRequest<T = unknown>(endpoint: string, path: string, body: unknown): Promise<T> {
  const response = await fetch(`${endpoint}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) {
    throw new Error(`etcd ${path}: ${response.status} ${text}`);
  }
  return JSON.parse(text) as T;
}

export async function putKey(endpoint: string, key: string, value: string, lease?: string): Promise<void> {
  await etcdRequest(endpoint, "/v3/kv/put", { key: encode(key), value: encode(value), ...(lease ? { lease } : {}) });
}

export async function deleteKey(endpoint: string, key: string): Promise<void> {
  await etcdRequest(endpoint, "/v3/kv/deleterange", { key: encode(key) });
}

/** Registers an instance as kratos does (namespace "/microservices", lease TTL 15 s). */
export async function registerKratos(
  endpoint: string,
  instance: KratosInstance,
  { namespace = "/microservices", ttlSeconds = 15 } = {},
): Promise<Registration> {
  const key = `${namespace}/${instance.name}/${instance.id}`;
  // Field order and names as Go's json.Marshal writes kratos' ServiceInstance.
  const value = JSON.stringify({
    id: instance.id,
    name: instance.name,
    version: instance.version,
    metadata: instance.metadata,
    endpoints: instance.endpoints,
  });
  const { ID: lease } = await etcdRequest<{ ID: string }>(endpoint, "/v3/lease/grant", { TTL: ttlSeconds });
  await putKey(endpoint, key, value, lease);
  const keepAlive = setInterval(() => {
    etcdRequest(endpoint, "/v3/lease/keepalive", { ID: lease }).catch(() => {});
  }, (ttlSeconds * 1000) / 3);
  keepAlive.unref();
  return {
    key,
    async deregister() {
      clearInterval(keepAlive);
      await deleteKey(endpoint, key);
      await etcdRequest(endpoint, "/v3/lease/revoke", { ID: lease });
    },
  };
}
