-- POST /v1/route with varied payments (distinct ids and contexts), optional pacing.
-- Env: APOS_KEY (API key), APOS_PACE_MS (per-connection delay between requests; 0 = flat out)
local key = os.getenv("APOS_KEY") or ""
local pace = tonumber(os.getenv("APOS_PACE_MS") or "0")
local networks = {"visa", "mastercard", "amex", "discover"}
local countries = {"US", "GB", "DE", "FR", "IN", "BR", "JP", "CA"}
local counter = 0
local thread_id = 0

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. key
end

function request()
  counter = counter + 1
  local i = counter
  local body = string.format(
    '{"payment_id":"p%d_%d","merchant_id":"m_%d","amount":%d,"currency":"USD",' ..
    '"payment_method":"card","card_network":"%s","country":"%s"}',
    tid or 0, i, i % 50, 500 + (i * 7919) % 200000, networks[i % 4 + 1], countries[i % 8 + 1])
  return wrk.format(nil, "/v1/route", nil, body)
end

function delay()
  return pace
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d errors=%d non2xx=%d " ..
    "connect_errors=%d read_errors=%d write_errors=%d timeouts=%d " ..
    "p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout,
    latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
