/**
 * Numbers objects by identity, for cache keys that must tell two decoders,
 * stores, fetch functions or clients apart without showing what is in them
 * (a fetch may carry a client certificate, a client credentials). Weakly
 * held: numbering an object never keeps it alive. Numbers start at 1, so 0
 * can stand for "none".
 */
export function createObjectIds<T extends object>(): (object: T) => number {
  const ids = new WeakMap<T, number>();
  let last = 0;
  return (object) => {
    let id = ids.get(object);
    if (id === undefined) {
      id = ++last;
      ids.set(object, id);
    }
    return id;
  };
}
