-- The cluster-wide Bedrock budget (src/budget/redis.rs; docs/decisions.md, "Bedrock budget:
-- GCRA in one Lua script"). One script, so every decision is atomic on the server's clock.
--
-- KEYS: 1 requests TAT, 2 tokens TAT, 3 leases (zset lease -> expiry ms),
--       4 replicas (zset replica -> last seen ms), 5 adaptive state (hash).
-- ARGV[1] is the operation:
--   acquire   rpm tpm max_leases lease ttl_ms tokens adaptive replica start_rpm growth
--             -> {granted, wait_ms, live_replicas, rate_milli_rpm (-1: none)}
--   settle    rpm tpm extra_requests token_delta lease adaptive throttled start_rpm beta cooldown_ms
--             -> {rate_milli_rpm}
--   renew     lease ttl_ms -> 1 while the lease is held
-- Rates are per minute; 0 turns a limit off. GCRA with no burst: a call is admitted when the
-- theoretical arrival time (TAT) is not in the future, and pushes it one emission interval
-- (requests) or tokens x interval per token (tokens) ahead.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local op = ARGV[1]
local REPLICA_TTL = 60000
local KEEP = 60000

local function tat(key)
  return math.max(tonumber(redis.call('GET', key)) or now, now)
end

local function store(key, value)
  redis.call('SET', key, tostring(value), 'PX', math.ceil(value - now) + KEEP)
end

-- The learnt rate (nil until adaptive has one), the configured rpm capping it.
local function adaptive_rate(rpm, start)
  local rate = tonumber(redis.call('HGET', KEYS[5], 'rate'))
  if rate == nil then
    rate = start
    redis.call('HSET', KEYS[5], 'rate', tostring(rate), 'updated', tostring(now))
  end
  if rpm > 0 then rate = math.min(rate, rpm) end
  return rate
end

local function milli(rate)
  if rate == nil then return -1 end
  return math.floor(rate * 1000)
end

if op == 'acquire' then
  local rpm, tpm, max_leases = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local lease, ttl, tokens = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
  local adaptive, replica = ARGV[8] == '1', ARGV[9]
  local start, growth = tonumber(ARGV[10]), tonumber(ARGV[11])

  redis.call('ZADD', KEYS[4], now, replica)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - REPLICA_TTL)
  redis.call('PEXPIRE', KEYS[4], REPLICA_TTL)
  local live = redis.call('ZCARD', KEYS[4])

  local rate = nil
  if adaptive then rate = adaptive_rate(rpm, start) elseif rpm > 0 then rate = rpm end

  local wait = 0
  local rtat, ttat
  local previous = tonumber(redis.call('GET', KEYS[1]))
  if rate ~= nil then
    rtat = tat(KEYS[1])
    wait = math.max(wait, rtat - now)
  end
  if tpm > 0 then
    ttat = tat(KEYS[2])
    wait = math.max(wait, ttat - now)
  end
  if max_leases > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
    if redis.call('ZCARD', KEYS[3]) >= max_leases then
      local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
      -- A release wakes nobody: poll, at most until the oldest lease would expire.
      wait = math.max(wait, math.min(tonumber(first[2]) - now, 25))
    end
  end

  if adaptive then
    -- Grow only while callers are held back by the rate: demand, not the quota, binds otherwise.
    local updated = tonumber(redis.call('HGET', KEYS[5], 'updated')) or now
    local learnt = tonumber(redis.call('HGET', KEYS[5], 'rate'))
    if previous ~= nil and previous > now - 60000 / rate then
      learnt = learnt * (1 + growth * (now - updated) / 1000)
      if rpm > 0 then learnt = math.min(learnt, rpm) end
    end
    redis.call('HSET', KEYS[5], 'rate', tostring(learnt), 'updated', tostring(now))
  end

  if wait > 0 then
    return {0, math.ceil(wait), live, milli(rate)}
  end
  if rate ~= nil then store(KEYS[1], rtat + 60000 / rate) end
  if tpm > 0 then store(KEYS[2], ttat + tokens * 60000 / tpm) end
  if max_leases > 0 then
    redis.call('ZADD', KEYS[3], now + ttl, lease)
    redis.call('PEXPIRE', KEYS[3], ttl + KEEP)
  end
  return {1, 0, live, milli(rate)}
end

if op == 'settle' then
  local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
  local extra, delta, lease = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
  local adaptive, throttled = ARGV[7] == '1', tonumber(ARGV[8])
  local start, beta, cooldown = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])

  redis.call('ZREM', KEYS[3], lease)
  local rate = nil
  if adaptive then rate = adaptive_rate(rpm, start) elseif rpm > 0 then rate = rpm end
  if adaptive and throttled > 0 then
    local cut = tonumber(redis.call('HGET', KEYS[5], 'cut')) or -1e18
    if now - cut >= cooldown then
      rate = math.max(1, rate * beta)
      redis.call('HSET', KEYS[5], 'rate', tostring(rate), 'updated', tostring(now), 'cut', tostring(now))
    end
  end
  -- Attempts the adapter retried were not admitted here: they use up the next slots.
  if extra > 0 and rate ~= nil then store(KEYS[1], tat(KEYS[1]) + extra * 60000 / rate) end
  if tpm > 0 and delta ~= 0 then
    local current = tonumber(redis.call('GET', KEYS[2])) or now
    store(KEYS[2], math.max(current + delta * 60000 / tpm, now))
  end
  return {milli(rate)}
end

if op == 'renew' then
  return redis.call('ZADD', KEYS[3], 'XX', 'CH', now + tonumber(ARGV[3]), ARGV[2])
end

return redis.error_reply('unknown budget operation ' .. tostring(op))
