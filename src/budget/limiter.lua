-- The cluster-wide Bedrock budget (src/budget/redis.rs; docs/decisions.md, "Bedrock budget:
-- GCRA in one Lua script"). One script, so every decision is atomic on the server's clock.
--
-- KEYS: 1 requests TAT, 2 tokens TAT, 3 leases (zset lease -> expiry ms),
--       4 replicas (zset replica -> last seen ms), 5 adaptive state (hash),
--       6 sent (zset: every attempt sent in the adaptive window -> when, ms),
--       7 reserved (zset: 'lease|usd' of every call running -> expiry ms).
-- ARGV[1] is the operation:
--   acquire   rpm tpm max_leases lease ttl_ms tokens adaptive replica start_rpm growth
--             settled_growth window_ms reserve_usd
--             -> {granted, wait_ms, live_replicas, rate_milli_rpm (-1: none)}
--   settle    rpm tpm requests throttled token_delta lease adaptive start_rpm keep max_cut
--             cooldown_ms window_ms reserve_usd
--             -> {rate_milli_rpm}
--   renew     lease ttl_ms reserve_usd -> 1 while the lease is held
--   reserved  -> USD reserved by the calls running (a string)
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

-- A running call's reservation: its estimated cost, until settled or expired.
local function reservation(lease, usd)
  return lease .. '|' .. usd
end

local function milli(rate)
  if rate == nil then return -1 end
  return math.floor(rate * 1000)
end

-- Adaptive: attempts sent in the last window_ms (those older fall out first).
local function sent_in_window(window)
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - window)
  return redis.call('ZCARD', KEYS[6])
end

if op == 'acquire' then
  local rpm, tpm, max_leases = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local lease, ttl, tokens = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
  local adaptive, replica = ARGV[8] == '1', ARGV[9]
  local start, growth = tonumber(ARGV[10]), tonumber(ARGV[11])
  local settled_growth, window = tonumber(ARGV[12]), tonumber(ARGV[13])
  local reserve = ARGV[14]

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
    -- At most `rate` attempts in any window: the quota's own shape, so the pace may not
    -- overfill a minute whose older part was sent at a lower rate.
    local capped = false
    if sent_in_window(window) >= rate then
      local oldest = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
      wait = math.max(wait, tonumber(oldest[2]) + window - now)
      capped = true
    end
    -- Grow only while callers are held back by the rate: demand, not the quota, binds otherwise.
    -- Fast until the first throttle has shown where the quota is, slowly after.
    local updated = tonumber(redis.call('HGET', KEYS[5], 'updated')) or now
    local learnt = tonumber(redis.call('HGET', KEYS[5], 'rate'))
    if capped or (previous ~= nil and previous > now - 60000 / rate) then
      local per_second = growth
      if redis.call('HEXISTS', KEYS[5], 'cut') == 1 then per_second = settled_growth end
      learnt = learnt * (1 + per_second * (now - updated) / 1000)
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
  if adaptive then
    redis.call('ZADD', KEYS[6], now, lease)
    redis.call('PEXPIRE', KEYS[6], window + KEEP)
  end
  if tonumber(reserve) > 0 then
    redis.call('ZADD', KEYS[7], now + ttl, reservation(lease, reserve))
    redis.call('PEXPIRE', KEYS[7], ttl + KEEP)
  end
  return {1, 0, live, milli(rate)}
end

if op == 'settle' then
  local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
  local requests, throttled = tonumber(ARGV[4]), tonumber(ARGV[5])
  local delta, lease = tonumber(ARGV[6]), ARGV[7]
  local adaptive, start = ARGV[8] == '1', tonumber(ARGV[9])
  local keep, max_cut = tonumber(ARGV[10]), tonumber(ARGV[11])
  local cooldown, window = tonumber(ARGV[12]), tonumber(ARGV[13])

  redis.call('ZREM', KEYS[3], lease)
  redis.call('ZREM', KEYS[7], reservation(lease, ARGV[14]))
  local rate = nil
  if adaptive then rate = adaptive_rate(rpm, start) elseif rpm > 0 then rate = rpm end
  if adaptive then
    -- The window holds what Bedrock counted: a throttled attempt (or none sent) leaves it,
    -- attempts the adapter made inside the call (server errors retried) join it.
    local kept = 1
    if throttled > 0 or requests == 0 then
      redis.call('ZREM', KEYS[6], lease)
      kept = 0
    end
    for i = 1, requests - throttled - kept do
      redis.call('ZADD', KEYS[6], now, lease .. '#' .. i)
    end
    redis.call('PEXPIRE', KEYS[6], window + KEEP)
  end
  if adaptive and throttled > 0 then
    local cut = tonumber(redis.call('HGET', KEYS[5], 'cut')) or -1e18
    if now - cut >= cooldown then
      -- The quota is what Bedrock accepted in its last minute: cut to a little below that,
      -- never up, and at most by max_cut at once (a throttle from others' traffic or a token
      -- quota says little about our count).
      local accepted = redis.call('ZCOUNT', KEYS[6], now - 60000, '+inf')
      rate = math.max(1, math.min(rate, math.max(accepted * keep, rate * max_cut)))
      redis.call('HSET', KEYS[5], 'rate', tostring(rate), 'updated', tostring(now), 'cut', tostring(now))
    end
  end
  -- Attempts the adapter retried were not admitted here: they use up the next slots.
  if requests > 1 and rate ~= nil then
    store(KEYS[1], tat(KEYS[1]) + (requests - 1) * 60000 / rate)
  end
  if tpm > 0 and delta ~= 0 then
    local current = tonumber(redis.call('GET', KEYS[2])) or now
    store(KEYS[2], math.max(current + delta * 60000 / tpm, now))
  end
  return {milli(rate)}
end

if op == 'renew' then
  local expiry = now + tonumber(ARGV[3])
  redis.call('ZADD', KEYS[7], 'XX', expiry, reservation(ARGV[2], ARGV[4]))
  return redis.call('ZADD', KEYS[3], 'XX', 'CH', expiry, ARGV[2])
end

if op == 'reserved' then
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now)
  local total = 0
  for _, member in ipairs(redis.call('ZRANGE', KEYS[7], 0, -1)) do
    total = total + (tonumber(string.match(member, '|([^|]*)$')) or 0)
  end
  return tostring(total)
end

return redis.error_reply('unknown budget operation ' .. tostring(op))
