/**
 * OpenTelemetry tracing of balanced calls. The only entry that imports
 * @opentelemetry/api (an optional peer dependency): the others stay free of it.
 *
 * @module connect-etcd-balancer/otel
 */
export { otelInterceptor } from "./otel-interceptor.js";
export type { OtelInterceptorOptions } from "./otel-interceptor.js";
export type { RpcSystem } from "./attributes.js";
