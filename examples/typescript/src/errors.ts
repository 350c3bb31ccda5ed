// Rich error details for @grpc/grpc-js clients of agent-staking.
//
// grpc-js exposes a failed call's code and message only. agent-staking puts a
// google.rpc.Status with typed details (ErrorInfo, BadRequest, RetryInfo,
// QuotaFailure) in the `grpc-status-details-bin` trailer; the types here are
// generated from the google/rpc protos of the google-proto-files package.

import { type ServiceError, status } from "@grpc/grpc-js";

import type { Duration } from "./gen/google/protobuf/duration.js";
import { BadRequest, ErrorInfo, QuotaFailure, RetryInfo } from "./gen/google/rpc/error_details.js";
import { Status } from "./gen/google/rpc/status.js";

export interface RichError {
  /** gRPC status code name, e.g. "INVALID_ARGUMENT". */
  code: string;
  message: string;
  /** Stable UPPER_SNAKE reason, domain "agentstaking.v1", metadata (with "hint"). */
  errorInfo?: ErrorInfo;
  /** Which request fields to fix, and why. */
  badRequest?: BadRequest;
  /** How long to wait before retrying, when waiting helps. */
  retryInfo?: RetryInfo;
  /** Which limit was exceeded. */
  quotaFailure?: QuotaFailure;
}

const TYPE_PREFIX = "type.googleapis.com/";

export function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).code === "number";
}

/** Decodes the google.rpc.Status details of a failed call. */
export function richError(error: ServiceError): RichError {
  const found: RichError = { code: status[error.code], message: error.details };
  const [raw] = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (raw === undefined || typeof raw === "string") {
    return found;
  }
  for (const detail of Status.decode(raw).details) {
    switch (detail.typeUrl.slice(TYPE_PREFIX.length)) {
      case "google.rpc.ErrorInfo":
        found.errorInfo = ErrorInfo.decode(detail.value);
        break;
      case "google.rpc.BadRequest":
        found.badRequest = BadRequest.decode(detail.value);
        break;
      case "google.rpc.RetryInfo":
        found.retryInfo = RetryInfo.decode(detail.value);
        break;
      case "google.rpc.QuotaFailure":
        found.quotaFailure = QuotaFailure.decode(detail.value);
        break;
    }
  }
  return found;
}

/** Seconds to wait before retrying, when the error says waiting helps. */
export function retryDelaySeconds(error: RichError): number | undefined {
  const delay: Duration | undefined = error.retryInfo?.retryDelay;
  return delay === undefined ? undefined : Number(delay.seconds) + delay.nanos / 1e9;
}

/** One line per detail: what went wrong and what to change. */
export function describe(error: RichError): string[] {
  const lines = [`${error.code}: ${error.message}`];
  if (error.errorInfo !== undefined) {
    const { reason, domain, metadata } = error.errorInfo;
    lines.push(`reason=${reason} domain=${domain}`);
    if (metadata["hint"]) {
      lines.push(`hint: ${metadata["hint"]}`);
    }
  }
  for (const violation of error.badRequest?.fieldViolations ?? []) {
    lines.push(`field ${violation.field}: ${violation.description}`);
  }
  const retry = retryDelaySeconds(error);
  if (retry !== undefined) {
    lines.push(`retry after ${retry} s`);
  }
  for (const violation of error.quotaFailure?.violations ?? []) {
    lines.push(`limit ${violation.subject}: ${violation.description}`);
  }
  return lines;
}
