import { Code, ConnectError } from "@connectrpc/connect";

/** The service name of "user-service" or kratos-style "discovery:///user-service". */
export function parseServiceName(target: string): string {
  const name = target.startsWith("discovery:") ? /^discovery:\/\/[^/]*\/(.*)$/.exec(target)?.[1] : target;
  if (name === undefined || name === "" || /\s/.test(name) || name.endsWith("/")) {
    throw new ConnectError(
      `createBalancedTransport: bad service ${JSON.stringify(target)}: use a name like "user-service" or "discovery:///user-service"`,
      Code.InvalidArgument,
    );
  }
  return name;
}
