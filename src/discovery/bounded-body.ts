/**
 * Reading response bodies with a ceiling: whoever answers in etcd's place
 * must not be able to grow the process without bound with an endless body or
 * a line that never ends. Bytes are counted as they arrive (after any
 * decompression fetch does), and the body is cancelled at the limit.
 */

/** Thrown when a body or line exceeds its limit; the caller turns it into a message naming the option. */
export class BodyTooLarge extends Error {
  constructor(readonly limit: number) {
    super(`more than ${limit} bytes`);
  }
}

/** The whole body as text; rejects with BodyTooLarge past `limit` bytes, having cancelled the body. */
export async function readBoundedText(response: Response, limit: number): Promise<string> {
  const declared = Number(response.headers.get("content-length") ?? Number.NaN);
  if (declared > limit) {
    await response.body?.cancel().catch(() => {});
    throw new BodyTooLarge(limit);
  }
  if (response.body === null) {
    return "";
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = response.body.getReader();
  try {
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      total += read.value.byteLength;
      if (total > limit) {
        throw new BodyTooLarge(limit);
      }
      chunks.push(read.value);
    }
  } finally {
    await reader.cancel().catch(() => {}); // ends the HTTP response, whatever stopped the reading
  }
  return new TextDecoder().decode(concat(chunks, total));
}

/**
 * The lines of a newline-delimited body, as etcd's gateway streams watch
 * responses; rejects with BodyTooLarge when a line exceeds `maxLineBytes`.
 */
export async function* boundedLines(body: ReadableStream<Uint8Array>, maxLineBytes: number): AsyncIterable<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let partial: Uint8Array[] = [];
  let partialBytes = 0;
  const take = (piece: Uint8Array) => {
    partialBytes += piece.byteLength;
    if (partialBytes > maxLineBytes) {
      throw new BodyTooLarge(maxLineBytes);
    }
    partial.push(piece);
  };
  const line = () => {
    const text = decoder.decode(concat(partial, partialBytes)).trim();
    partial = [];
    partialBytes = 0;
    return text;
  };
  try {
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      let start = 0;
      for (let newline = read.value.indexOf(0x0a); newline >= 0; newline = read.value.indexOf(0x0a, start)) {
        take(read.value.subarray(start, newline));
        start = newline + 1;
        const text = line();
        if (text !== "") {
          yield text;
        }
      }
      take(read.value.subarray(start));
    }
    const last = line();
    if (last !== "") {
      yield last;
    }
  } finally {
    await reader.cancel().catch(() => {}); // ends the HTTP response, whatever stopped the reading
  }
}

function concat(chunks: readonly Uint8Array[], total: number): Uint8Array {
  if (chunks.length === 1) {
    return chunks[0]!;
  }
  const joined = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    joined.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return joined;
}
