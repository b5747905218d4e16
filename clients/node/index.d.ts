// Types for llmgateway-grpc-client, written by hand from the contract
// (protos/llmgateway/v1). Messages are plain objects as @grpc/proto-loader
// builds them with { keepCase, longs: Number, enums: String, defaults, oneofs }:
// field names exactly as in the .proto files, 64-bit integers as numbers, enums
// as their names. In replies every field is present (scalars with their default,
// unset messages as null) except proto3 `optional` fields, which are absent
// when unset; a oneof's name holds the name of the member that is set.
// Requests take enums as names or numbers and may leave out any field. The
// google.protobuf types (Struct, Timestamp) keep protobufjs's camelCase names.

import type { ChannelCredentials, ChannelOptions } from '@grpc/grpc-js';

// ---- Enums (names as in the contract) ----

export type Role = 'ROLE_UNSPECIFIED' | 'ROLE_SYSTEM' | 'ROLE_USER' | 'ROLE_ASSISTANT' | 'ROLE_TOOL';
export type ImageDetail = 'IMAGE_DETAIL_UNSPECIFIED' | 'IMAGE_DETAIL_AUTO' | 'IMAGE_DETAIL_LOW' | 'IMAGE_DETAIL_HIGH';
export type ToolChoiceMode =
  | 'TOOL_CHOICE_MODE_UNSPECIFIED'
  | 'TOOL_CHOICE_MODE_AUTO'
  | 'TOOL_CHOICE_MODE_NONE'
  | 'TOOL_CHOICE_MODE_REQUIRED';
export type ResponseFormatType =
  | 'RESPONSE_FORMAT_TYPE_UNSPECIFIED'
  | 'RESPONSE_FORMAT_TYPE_TEXT'
  | 'RESPONSE_FORMAT_TYPE_JSON_OBJECT'
  | 'RESPONSE_FORMAT_TYPE_JSON_SCHEMA';
export type ReasoningEffort =
  | 'REASONING_EFFORT_UNSPECIFIED'
  | 'REASONING_EFFORT_NONE'
  | 'REASONING_EFFORT_MINIMAL'
  | 'REASONING_EFFORT_LOW'
  | 'REASONING_EFFORT_MEDIUM'
  | 'REASONING_EFFORT_HIGH'
  | 'REASONING_EFFORT_XHIGH';
export type DataCollection = 'DATA_COLLECTION_UNSPECIFIED' | 'DATA_COLLECTION_ALLOW' | 'DATA_COLLECTION_DENY';
export type ProviderSort =
  | 'PROVIDER_SORT_UNSPECIFIED'
  | 'PROVIDER_SORT_PRICE'
  | 'PROVIDER_SORT_THROUGHPUT'
  | 'PROVIDER_SORT_LATENCY';
export type ZaiEndpoint = 'ZAI_ENDPOINT_UNSPECIFIED' | 'ZAI_ENDPOINT_GENERAL' | 'ZAI_ENDPOINT_CODING';
export type Provider =
  | 'PROVIDER_UNSPECIFIED'
  | 'PROVIDER_OPENROUTER'
  | 'PROVIDER_ZAI'
  | 'PROVIDER_OPENAI'
  | 'PROVIDER_ANTHROPIC'
  | 'PROVIDER_GEMINI'
  | 'PROVIDER_GROQ'
  | 'PROVIDER_OLLAMA';
export type ReasoningDetailKind =
  | 'REASONING_DETAIL_KIND_UNSPECIFIED'
  | 'REASONING_DETAIL_KIND_THINKING'
  | 'REASONING_DETAIL_KIND_REDACTED_THINKING'
  | 'REASONING_DETAIL_KIND_THOUGHT_SIGNATURE'
  | 'REASONING_DETAIL_KIND_OPENROUTER';
export type FinishReason =
  | 'FINISH_REASON_UNSPECIFIED'
  | 'FINISH_REASON_STOP'
  | 'FINISH_REASON_LENGTH'
  | 'FINISH_REASON_TOOL_CALLS'
  | 'FINISH_REASON_CONTENT_FILTER'
  | 'FINISH_REASON_OTHER';
export type UsageGrouping =
  | 'USAGE_GROUPING_UNSPECIFIED'
  | 'USAGE_GROUPING_KEY'
  | 'USAGE_GROUPING_MODEL'
  | 'USAGE_GROUPING_DAY'
  | 'USAGE_GROUPING_ROUTE'
  | 'USAGE_GROUPING_TASK';
/** What the work is, for a `route/<name>` call (routing.proto, docs/routing.md). */
export type Task =
  | 'TASK_UNSPECIFIED'
  | 'TASK_CHAT'
  | 'TASK_CODE'
  | 'TASK_REASONING'
  | 'TASK_EXTRACTION'
  | 'TASK_SUMMARIZATION'
  | 'TASK_TRANSLATION'
  | 'TASK_AGENT'
  | 'TASK_VISION'
  | 'TASK_AUTO';
/** A cost band for a routed call. */
export type CostTier = 'COST_TIER_UNSPECIFIED' | 'COST_TIER_LOW' | 'COST_TIER_MEDIUM' | 'COST_TIER_HIGH';
/** Where a routing decision's task came from. */
export type TaskSource =
  | 'TASK_SOURCE_UNSPECIFIED'
  | 'TASK_SOURCE_CALLER'
  | 'TASK_SOURCE_RULE'
  | 'TASK_SOURCE_ROUTE_DEFAULT';
/** Why a route's target was passed over. */
export type SkipReason =
  | 'SKIP_REASON_UNSPECIFIED'
  | 'SKIP_REASON_KEY_MODEL_PATTERNS'
  | 'SKIP_REASON_CONTEXT_WINDOW'
  | 'SKIP_REASON_NO_TOOLS'
  | 'SKIP_REASON_CANNOT_FORCE_TOOL'
  | 'SKIP_REASON_NO_JSON_SCHEMA'
  | 'SKIP_REASON_NO_JSON_OBJECT'
  | 'SKIP_REASON_NO_VISION'
  | 'SKIP_REASON_NO_IMAGE_URLS'
  | 'SKIP_REASON_CIRCUIT_OPEN'
  | 'SKIP_REASON_BUDGET'
  | 'SKIP_REASON_NOT_CONFIGURED'
  | 'SKIP_REASON_PROVIDER_REFUSES'
  | 'SKIP_REASON_FAILED';

/** An enum in a request: its name or its number. */
export type EnumInput<Name extends string> = Name | number;

// ---- google.protobuf types ----

/**
 * google.protobuf.Struct as proto-loader takes it; build one from JSON with toStruct().
 * Unlike the contract's own messages, the well-known types have camelCase field names.
 */
export interface Struct {
  fields?: { [key: string]: StructValue };
}
export interface StructValue {
  nullValue?: 'NULL_VALUE' | 0;
  numberValue?: number;
  stringValue?: string;
  boolValue?: boolean;
  structValue?: Struct;
  listValue?: { values?: StructValue[] };
}
/** google.protobuf.Timestamp. */
export interface Timestamp {
  seconds?: number;
  nanos?: number;
}

// ---- Requests ----

export interface ImagePart {
  url?: string;
  detail?: EnumInput<ImageDetail>;
}
export type ContentPart = { text: string; image?: never } | { image: ImagePart; text?: never };

export interface ToolCallInput {
  id?: string;
  name?: string;
  /** The arguments as a JSON object, in text. */
  arguments?: string;
}

/**
 * A ReasoningDetail sent back on an assistant turn: pass the reply's `reasoning_details`
 * unchanged (each provider takes back only the details it issued).
 */
export interface ReasoningDetailInput {
  provider?: EnumInput<Provider>;
  kind?: EnumInput<ReasoningDetailKind>;
  text?: string;
  signature?: string;
  tool_call_id?: string;
  index?: number;
  raw_json?: string;
}

export interface ChatMessage {
  role?: EnumInput<Role>;
  content?: string;
  parts?: ContentPart[];
  name?: string;
  tool_calls?: ToolCallInput[];
  tool_call_id?: string;
  reasoning?: string;
  /** Assistant messages only: the reply's reasoning_details, unchanged. At most 64. */
  reasoning_details?: ReasoningDetailInput[];
  /** Assistant messages only: the reply's refusal (sent back to OpenAI). */
  refusal?: string;
}

export interface SamplingParams {
  temperature?: number;
  top_p?: number;
  max_tokens?: number;
  stop?: string[];
  seed?: number;
  presence_penalty?: number;
  frequency_penalty?: number;
}

export interface Tool {
  name?: string;
  description?: string;
  /** The arguments' JSON Schema: toStruct({ type: 'object', properties: { ... } }). */
  parameters?: Struct;
  strict?: boolean;
}

export type ToolChoice = { mode: EnumInput<ToolChoiceMode>; function_name?: never } | { function_name: string; mode?: never };

export interface JsonSchemaFormat {
  name?: string;
  description?: string;
  schema?: Struct;
  strict?: boolean;
}

export interface ResponseFormat {
  type?: EnumInput<ResponseFormatType>;
  json_schema?: JsonSchemaFormat;
}

export interface ReasoningOptions {
  enabled?: boolean;
  effort?: EnumInput<ReasoningEffort>;
  max_tokens?: number;
  exclude?: boolean;
}

export interface MaxPrice {
  prompt?: number;
  completion?: number;
  request?: number;
  image?: number;
}

export interface ProviderPreferences {
  order?: string[];
  allow_fallbacks?: boolean;
  require_parameters?: boolean;
  data_collection?: EnumInput<DataCollection>;
  sort?: EnumInput<ProviderSort>;
  max_price?: MaxPrice;
}

export interface OpenRouterOptions {
  models?: string[];
  provider?: ProviderPreferences;
}

export interface ZaiOptions {
  endpoint?: EnumInput<ZaiEndpoint>;
  clear_thinking?: boolean;
}

/**
 * What a caller says about a `route/<name>` call; ignored (not even validated) when `model`
 * names a model or an alias.
 */
export interface RoutingHints {
  /** Default: inferred by the gateway's rules (TASK_AUTO). */
  task?: EnumInput<Task>;
  /** Default: the route entry's own targets. */
  cost_tier?: EnumInput<CostTier>;
  /** Keeps later turns on the target that served the first. At most 128 characters. */
  session_id?: string;
  /** Also fill the decision's `plan` and `signals`. */
  explain?: boolean;
}

/** CompleteRequest and StreamCompleteRequest (field for field the same). */
export interface CompleteRequest {
  /**
   * `openrouter/<vendor>/<model>`, `zai/<model>`, `openai/<model>`, `anthropic/<model>`,
   * `gemini/<model>`, `groq/<model>`, `ollama/<model>`, a configured alias, or a configured
   * route `route/<name>` (see `routing`).
   */
  model: string;
  /** The conversation so far, oldest first: 1 to 2,048 messages. */
  messages: ChatMessage[];
  sampling?: SamplingParams;
  tools?: Tool[];
  tool_choice?: ToolChoice;
  response_format?: ResponseFormat;
  reasoning?: ReasoningOptions;
  user?: string;
  openrouter?: OpenRouterOptions;
  zai?: ZaiOptions;
  /** For a `route/<name>` model: the task, a cost tier, a session id. */
  routing?: RoutingHints;
}
export type StreamCompleteRequest = CompleteRequest;

export interface ExplainRouteRequest {
  /** The call as it would be sent; its `model` must be `route/<name>`. */
  request: CompleteRequest;
}

export interface ListModelsRequest {
  /** Only this provider's models; unset: all. */
  provider?: EnumInput<Provider>;
}

export interface GetUsageRequest {
  start_time?: Timestamp;
  end_time?: Timestamp;
  group_by?: EnumInput<UsageGrouping>;
  key_id?: string;
}

// ---- Replies ----

export interface ToolCall {
  id: string;
  name: string;
  /** The arguments as a JSON object, in text (JSON.parse it). */
  arguments: string;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** Prompt tokens read from the provider's cache (part of prompt_tokens). */
  cached_tokens: number;
  reasoning_tokens: number;
  /** Absent when the cost is unknown (reported by none and priced nowhere). */
  cost_usd?: number;
  /** Prompt tokens written to the provider's cache (part of prompt_tokens). */
  cache_write_tokens: number;
}

/** An opaque, provider-tagged reasoning item (thinking signatures): send it back unchanged. */
export interface ReasoningDetail {
  provider: Provider;
  kind: ReasoningDetailKind;
  text: string;
  signature: string;
  tool_call_id: string;
  index: number;
  raw_json: string;
}

export interface CompleteResponse {
  id: string;
  model: string;
  provider: Provider;
  upstream_provider: string;
  content: string;
  reasoning: string;
  tool_calls: ToolCall[];
  finish_reason: FinishReason;
  native_finish_reason: string;
  /** null only when the upstream reported no usage. */
  usage: Usage | null;
  attempts: number;
  zai_endpoint: ZaiEndpoint;
  fallbacks: number;
  reasoning_details: ReasoningDetail[];
  /** The model's refusal (OpenAI); '' when none. */
  refusal: string;
  /** Why the route chose its target; null unless a route (`route/<name>`) served. */
  routing: RoutingDecision | null;
}

export interface CompletionDone {
  id: string;
  model: string;
  provider: Provider;
  upstream_provider: string;
  finish_reason: FinishReason;
  native_finish_reason: string;
  /** null only when the upstream reported no usage. */
  usage: Usage | null;
  attempts: number;
  zai_endpoint: ZaiEndpoint;
  fallbacks: number;
  /** Delivered whole here, at the end of the stream. */
  reasoning_details: ReasoningDetail[];
  /** The model's refusal (OpenAI), delivered whole here; '' when none. */
  refusal: string;
  /** As CompleteResponse.routing: null unless a route served. */
  routing: RoutingDecision | null;
}

/** A target a routed call did not use, and why. */
export interface PassedOver {
  /** Gateway naming, with a pinned Z.AI endpoint (`zai/glm-4.7@coding`). */
  target: string;
  reason: SkipReason;
  /** The reason in words, with the figures behind it. */
  detail: string;
  /** The reason's stable id (`no-vision`, `context-window`, `failed`). */
  id: string;
}

/** Why a route served a call with the target it did. */
export interface RoutingDecision {
  /** `route/default`. */
  route: string;
  /** Never TASK_UNSPECIFIED or TASK_AUTO. */
  task: Task;
  task_source: TaskSource;
  /** The inferring rule's id (`code-fences`); '' for the caller's task. */
  rule: string;
  /** The route entry used: a task name (`code`), `chinese` or `default`. */
  entry: string;
  cost_tier: CostTier;
  /** The target that served; from explainRoute, the one the call would try first. */
  chosen: string;
  /** In the order considered: skipped before any request, or tried and failed. */
  passed_over: PassedOver[];
  /** The session's earlier target was kept. */
  sticky: boolean;
  /** Moved once to a larger context window after the first target refused the prompt's length. */
  escalated: boolean;
  escalated_from: string;
  estimated_prompt_tokens: number;
  /** 0 to 1: the rule's confidence; 1 for the caller's task. */
  confidence: number;
  /** A rule fired below `[routing] min_confidence`, so the route's default served. */
  below_threshold: boolean;
  /** With `routing.explain` (and always from explainRoute): every eligible target, in try order. */
  plan: string[];
  /** With `routing.explain` (and always from explainRoute): what the rules saw. */
  signals: { [key: string]: string };
}

export interface ExplainRouteResponse {
  /** Always set on success. */
  decision: RoutingDecision;
}

export interface ContentDelta {
  text: string;
}

export interface ReasoningDelta {
  text: string;
}

/** One StreamComplete event; `event` names the member that is set. `done` comes last, exactly once. */
export type StreamCompleteResponse =
  | { event: 'content_delta'; content_delta: ContentDelta }
  | { event: 'reasoning_delta'; reasoning_delta: ReasoningDelta }
  | { event: 'tool_call'; tool_call: ToolCall }
  | { event: 'done'; done: CompletionDone };

export interface ModelPricing {
  prompt_per_million?: number;
  completion_per_million?: number;
  cached_prompt_per_million?: number;
}

export interface ModelInfo {
  name: string;
  provider: Provider;
  upstream_model: string;
  display_name: string;
  /** Absent when unknown. */
  context_length?: number;
  /** null when no price is known. */
  pricing: ModelPricing | null;
  available: boolean;
  alias_of: string;
  fallbacks: string[];
  /**
   * What the provider's own list says the model takes (OpenRouter `/models`, Ollama
   * `/api/show`); null for an alias, a route, or a provider that publishes none.
   */
  capabilities: ModelCapabilities | null;
}

/** Each field is absent when the provider's list does not publish it ("not published", not "no"). */
export interface ModelCapabilities {
  tools?: boolean;
  json_schema?: boolean;
  json_object?: boolean;
  vision?: boolean;
  forced_tool_choice?: boolean;
}

export interface ListModelsResponse {
  models: ModelInfo[];
  incomplete_providers: Provider[];
}

export interface UsageRow {
  group: string;
  calls: number;
  failed_calls: number;
  prompt_tokens: number;
  completion_tokens: number;
  cached_tokens: number;
  reasoning_tokens: number;
  cost_usd: number;
  cache_write_tokens: number;
}

export interface GetUsageResponse {
  rows: UsageRow[];
}

// ---- Errors ----

/** A gRPC status code's name, as in @grpc/grpc-js's `status` enum. */
export type StatusCodeName =
  | 'OK'
  | 'CANCELLED'
  | 'UNKNOWN'
  | 'INVALID_ARGUMENT'
  | 'DEADLINE_EXCEEDED'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'PERMISSION_DENIED'
  | 'RESOURCE_EXHAUSTED'
  | 'FAILED_PRECONDITION'
  | 'ABORTED'
  | 'OUT_OF_RANGE'
  | 'UNIMPLEMENTED'
  | 'INTERNAL'
  | 'UNAVAILABLE'
  | 'DATA_LOSS'
  | 'UNAUTHENTICATED';

/**
 * The reasons the gateway sends in google.rpc.ErrorInfo: the contract's ErrorReason values
 * without their `ERROR_REASON_` prefix. `reason` is typed `string`, as a newer gateway may send
 * one this list does not know yet.
 */
export type ErrorReason =
  | 'INVALID_REQUEST'
  | 'UNKNOWN_MODEL'
  | 'PROVIDER_NOT_CONFIGURED'
  | 'UPSTREAM_AUTH_FAILED'
  | 'UPSTREAM_INSUFFICIENT_CREDITS'
  | 'UPSTREAM_PERMISSION_DENIED'
  | 'UPSTREAM_CONTENT_FLAGGED'
  | 'UPSTREAM_REJECTED_REQUEST'
  | 'UPSTREAM_CONTEXT_LENGTH_EXCEEDED'
  | 'UPSTREAM_MODEL_NOT_FOUND'
  | 'UPSTREAM_RATE_LIMITED'
  | 'UPSTREAM_QUOTA_EXCEEDED'
  | 'UPSTREAM_OVERLOADED'
  | 'UPSTREAM_UNAVAILABLE'
  | 'UPSTREAM_UNREACHABLE'
  | 'UPSTREAM_TIMEOUT'
  | 'UPSTREAM_MALFORMED_RESPONSE'
  | 'UPSTREAM_STREAM_TRUNCATED'
  | 'UPSTREAM_DUPLICATE_REQUEST'
  | 'INTERNAL'
  | 'GATEWAY_BUSY'
  | 'UPSTREAM_CIRCUIT_OPEN'
  | 'UNAUTHENTICATED'
  | 'MODEL_NOT_ALLOWED'
  | 'KEY_RATE_LIMITED'
  | 'KEY_BUDGET_EXCEEDED'
  | 'USAGE_NOT_ALLOWED'
  | 'UPSTREAM_RESPONSE_TOO_LARGE'
  | 'GATEWAY_STATE_UNAVAILABLE'
  | 'UPSTREAM_INVALID_TOOL_CALL'
  | 'NO_ELIGIBLE_TARGET';

/** What decodeError() reads from a failed call's status and its google.rpc details. */
export interface DecodedError {
  code: StatusCodeName;
  /** The server's message. */
  message: string;
  /** google.rpc.ErrorInfo reason (an ErrorReason: `UNKNOWN_MODEL`, ...); '' when absent (the gateway was not reached). */
  reason: string;
  /** google.rpc.ErrorInfo domain (`llmgateway.v1`); '' when absent. */
  domain: string;
  /** google.rpc.ErrorInfo metadata (for example `requestId`, `upstreamStatus`). */
  metadata: { [key: string]: string };
  /** google.rpc.BadRequest: field path to what is wrong with it. */
  fieldViolations: { [field: string]: string };
  /** google.rpc.RetryInfo delay in seconds; null when the server gave none. */
  retryAfterSeconds: number | null;
}

/** Every failed call rejects (or, for stream(), throws) with one of these. */
export declare class GatewayError extends Error {
  constructor(details: DecodedError);
  readonly name: 'GatewayError';
  /** `CODE (REASON): details`; `CODE: details` when the reason is empty or is the code. */
  readonly message: string;
  readonly code: StatusCodeName;
  readonly reason: string;
  readonly domain: string;
  readonly metadata: { [key: string]: string };
  readonly fieldViolations: { [field: string]: string };
  readonly retryAfterSeconds: number | null;
  /** The server's message alone. */
  readonly details: string;
}

/** Decodes a @grpc/grpc-js ServiceError's status and google.rpc details. */
export declare function decodeError(error: {
  code: number;
  details: string;
  metadata?: { get(key: string): Array<string | Buffer> };
}): DecodedError;

/** A google.protobuf.Struct from a plain JSON object (tool parameters, JSON schemas). */
export declare function toStruct(object: { [key: string]: unknown }): Struct;

// ---- The client ----

export interface GatewayClientOptions {
  /** Sent as `authorization: Bearer <apiKey>` on every call. */
  apiKey?: string;
  /** Default: insecure (plaintext); pass grpc.credentials.createSsl() for TLS. */
  credentials?: ChannelCredentials;
  /**
   * `'round_robin'` spreads calls over every address the target resolves to (a headless
   * DNS name: one per gateway replica); grpc-js's default, `'pick_first'`, sends them all to one.
   */
  loadBalancing?: 'pick_first' | 'round_robin';
  /** Raw grpc-js channel options, over the client's own (a `grpc.service_config` replaces `loadBalancing`'s). */
  channelOptions?: ChannelOptions;
}

export interface CallOptions {
  /** Deadline in milliseconds; undefined means 60 s, null means none. */
  timeoutMs?: number | null;
}

export declare class GatewayClient {
  /**
   * `target` is `host:port`, for example `localhost:50051`, or a gRPC name such as
   * `dns:///llmgateway-headless.NAMESPACE.svc.cluster.local:50051` (with `loadBalancing: 'round_robin'`).
   */
  constructor(target: string, options?: GatewayClientOptions);
  /** One whole completion. */
  complete(request: CompleteRequest, options?: CallOptions): Promise<CompleteResponse>;
  /** The completion's events as they arrive; leaving the loop early cancels the call. */
  stream(request: StreamCompleteRequest, options?: CallOptions): AsyncGenerator<StreamCompleteResponse, void, undefined>;
  listModels(request?: ListModelsRequest, options?: CallOptions): Promise<ListModelsResponse>;
  getUsage(request?: GetUsageRequest, options?: CallOptions): Promise<GetUsageResponse>;
  /**
   * How a `route/<name>` call would be routed, as a dry run: the decision (plan and signals
   * included), with no upstream request, no spend and no ledger row.
   */
  explainRoute(request: CompleteRequest, options?: CallOptions): Promise<RoutingDecision>;
  /** Resolves once the channel is connected; rejects after timeoutMs (default 30 s). */
  waitForReady(timeoutMs?: number): Promise<void>;
  close(): void;
}
