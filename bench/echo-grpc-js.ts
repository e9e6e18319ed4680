// EchoService.Echo for @grpc/grpc-js, hand-written over protobuf-es (no
// proto-loader): the servers of the gRPC client comparison and its grpc-js
// client share these (de)serializers.
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { EchoRequestSchema, EchoResponseSchema, EchoService, type EchoRequest, type EchoResponse } from "../gen/test/echo/v1/echo_pb.js";

/** "/test.echo.v1.EchoService/Echo" */
export const echoPath = `/${EchoService.typeName}/${EchoService.method.echo.name}`;

export const serializeEchoRequest = (message: EchoRequest): Buffer => {
  const bytes = toBinary(EchoRequestSchema, message);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
};
export const deserializeEchoRequest = (bytes: Buffer): EchoRequest => fromBinary(EchoRequestSchema, bytes);
export const serializeEchoResponse = (message: EchoResponse): Buffer => {
  const bytes = toBinary(EchoResponseSchema, message);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
};
export const deserializeEchoResponse = (bytes: Buffer): EchoResponse => fromBinary(EchoResponseSchema, bytes);

/** The grpc-js service definition of EchoService, Echo only. */
export const echoServiceDefinition: grpc.ServiceDefinition<{ echo: grpc.handleUnaryCall<EchoRequest, EchoResponse> }> = {
  echo: {
    path: echoPath,
    requestStream: false,
    responseStream: false,
    requestSerialize: serializeEchoRequest,
    requestDeserialize: deserializeEchoRequest,
    responseSerialize: serializeEchoResponse,
    responseDeserialize: deserializeEchoResponse,
  },
};
