const common = `Options for every command:
  --etcd URL        etcd client URL; repeat it for several members
                    (default: $ETCD_ENDPOINTS, comma-separated, else http://127.0.0.1:2379)
  --namespace NS    key namespace (default: /microservices for kratos, none for etcd-naming)
  --format NAME     registry layout: kratos (default) or etcd-naming
  --user NAME       etcd user; the password is read from $ETCD_PASSWORD, never from a flag
  -h, --help        this help
  -V, --version     the package version

Exit codes: 0 done, 1 failed (etcd unreachable or refusing, no usable instance), 2 bad command line.`;

export const overallHelp = `Usage: connect-etcd-balancer <command> <service> [options]

Shows the instances of a service registered in etcd (go-kratos or etcd-naming layout) the way
connect-etcd-balancer reads them. <service> is a name like user-service or discovery:///user-service.

Commands:
  ls <service>      the instances and the etcd revision read
  watch <service>   a line per instance added, changed or removed, until Ctrl-C
  pick <service>    the peers a balancer would choose for the next calls

${common}

Run connect-etcd-balancer <command> --help for the options of a command.
`;

export const commandHelp = {
  ls: `Usage: connect-etcd-balancer ls <service> [--json] [options]

Lists the instances of <service>, one row per registered endpoint (id, address, scheme, version,
weight, metadata), and the etcd revision read. Entries that cannot be used (bad JSON, no usable
endpoint, another service's name) are listed on stderr with their key and the reason.

  --json            print { service, revision, instances, skipped } as JSON instead

Fails when etcd cannot be read or the service has no usable instance.

${common}
`,
  watch: `Usage: connect-etcd-balancer watch <service> [--json] [options]

Prints the instances of <service> as "added", then a line for each instance added, changed or
removed, until Ctrl-C (exit 0). While etcd is unreachable it says so on stderr and keeps trying;
what changed meanwhile is printed once etcd answers again. A service with no instance yet is
watched until one registers; an etcd that cannot be read at the start is an error.

  --json            one JSON object per line: { time, revision, change, instance }

${common}
`,
  pick: `Usage: connect-etcd-balancer pick <service> [--balancer NAME] [-n N] [--key KEY] [--subset N|off] [--zone ZONE] [options]

Prints, in order, the peers a balancer built over the current instances would choose for the next
N calls, as if all N were in flight at once (least_request and p2c count each earlier pick as a
call in flight). round_robin and weighted_round_robin start at a random point of their cycle, as
every new transport does.

  -b, --balancer NAME  round_robin (default), random, weighted_round_robin, least_request, p2c,
                       ring_hash
  -n, --count N        how many picks (default 10)
  --key KEY            the hash key of the calls, for ring_hash: the same key gives the same peer.
                       Without it ring_hash picks at random, as for calls that set no hashKey.
  --scheme SCHEME      the endpoint schemes a transport dials, in order of preference; repeat it
                       (default grpc and grpcs, as the transport; http and https for Connect over fetch)
  --subset N|off       the peers one transport spreads its calls over (default 25, as the transport;
                       a random subset each run, as each transport draws its own; never for ring_hash)
  --zone ZONE          the caller's zone: picks stay on instances whose metadata --zone-key (default
                       "zone") is ZONE, as the transport's zone option

Fails when etcd cannot be read or no instance registers an endpoint with those schemes.

${common}
`,
} as const;
