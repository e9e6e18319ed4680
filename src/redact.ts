/** Longest URL shown in a message: a registry value may hold a 100,000-character host. */
const maxShownLength = 120;

/**
 * A URL as it may appear in an error, event or log line: scheme, host and
 * path only. User info, query and fragment can carry secrets, so they are
 * never shown; text that does not parse as a URL with a host is not shown at
 * all, since where a password ends in it cannot be known.
 */
export function redactUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return "(unparsable URL)";
  }
  if (url.host === "" || !text.includes("//")) {
    return "(unparsable URL)";
  }
  const path = url.pathname === "/" ? "" : url.pathname;
  const shown = `${url.protocol}//${url.host}${path}`;
  return shown.length > maxShownLength ? `${shown.slice(0, maxShownLength)}…` : shown;
}
