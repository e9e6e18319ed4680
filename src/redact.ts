/** Longest URL shown in a message: a registry value may hold a 100,000-character host. */
const maxShownLength = 120;

const unparsable = "(unparsable URL)";

/**
 * A URL as it may appear in an error, event or log line: scheme, host and
 * path only. User info, query and fragment can carry secrets, so they are
 * never shown; text that does not start with a scheme and "//" is not shown
 * at all, since where a password ends in it cannot be known.
 *
 * The host shown is whatever follows the last "@": a password written
 * unescaped may contain "/", "?" or "#", and then a URL parser ends the host
 * inside the password (`http://user:123#x@host` has host "user", port 123).
 * An "@" in a path is therefore mistaken for credentials: a wrong host in a
 * message is better than a leaked password.
 */
export function redactUrl(text: string): string {
  const scheme = /^[a-z][a-z\d+.-]*:\/\//i.exec(text)?.[0];
  if (scheme === undefined) {
    return unparsable;
  }
  const at = text.lastIndexOf("@");
  let url: URL;
  try {
    url = new URL(scheme + text.slice(at >= 0 ? at + 1 : scheme.length));
  } catch {
    return unparsable;
  }
  if (url.host === "") {
    return unparsable;
  }
  const path = url.pathname === "/" ? "" : url.pathname;
  const shown = `${url.protocol}//${at >= 0 ? "***@" : ""}${url.host}${path}`;
  return shown.length > maxShownLength ? `${shown.slice(0, maxShownLength)}…` : shown;
}
