-- One peer's keys (from `base`) and the helpers of the mailbox scripts (store/redis/mod.rs
-- describes the keys).
local now = now_ms()
local H = base .. 'h'
local CONNS = base .. 'conns'
local D = base .. 'd'
local function M(c) return base .. 'm:' .. c end
local function R(c) return base .. 'r:' .. c end
local function RV(c) return base .. 'rv:' .. c end

-- The time a stored member `seq|ms|envelope` was stored.
local function item_ms(m)
  local a = string.find(m, '|', 1, true)
  local b = string.find(m, '|', a + 1, true)
  return tonumber(string.sub(m, a + 1, b - 1))
end

-- Drops the members of `key` older than `ttl`; returns how many.
local function expire(key, ttl)
  local n = 0
  for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    if now - item_ms(m) < ttl then break end
    redis.call('ZREM', key, m)
    n = n + 1
  end
  return n
end

-- Puts the messages of every reservation of `c` whose lease ran out back into its mailbox.
local function reclaim(c)
  local rv = redis.call('HGETALL', RV(c))
  for i = 1, #rv, 2 do
    local parts = words(rv[i + 1])
    if num(parts[1]) <= now then
      for j = 2, #parts do
        for _, m in ipairs(redis.call('ZRANGEBYSCORE', R(c), parts[j], parts[j])) do
          redis.call('ZADD', M(c), parts[j], m)
        end
        redis.call('ZREMRANGEBYSCORE', R(c), parts[j], parts[j])
      end
      redis.call('HDEL', RV(c), rv[i])
    end
  end
end

-- Deletes what the poll with `receipt` reserved; returns how many messages.
local function ack(c, receipt)
  local v = redis.call('HGET', RV(c), receipt)
  if not v then return 0 end
  local parts = words(v)
  local n = 0
  for j = 2, #parts do
    n = n + redis.call('ZREMRANGEBYSCORE', R(c), parts[j], parts[j])
  end
  redis.call('HDEL', RV(c), receipt)
  return n
end

-- Reserves up to `limit` messages of `c` under `receipt` for `lease` ms and returns them.
local function take(c, receipt, limit, lease)
  local ms = redis.call('ZRANGE', M(c), 0, limit - 1, 'WITHSCORES')
  local out, seqs = {}, {}
  for i = 1, #ms, 2 do
    out[#out + 1] = ms[i]
    seqs[#seqs + 1] = ms[i + 1]
    redis.call('ZADD', R(c), ms[i + 1], ms[i])
  end
  if #out > 0 then
    redis.call('ZREMRANGEBYRANK', M(c), 0, #out - 1)
    redis.call('HSET', RV(c), receipt, (now + lease) .. ' ' .. table.concat(seqs, ' '))
  end
  return out
end

-- Messages of `c` waiting or reserved.
local function held(c)
  return redis.call('ZCARD', M(c)) + redis.call('ZCARD', R(c))
end

local function drop_conn(c)
  redis.call('DEL', M(c), R(c), RV(c))
  redis.call('HDEL', H, 'g:' .. c, 'n:' .. c, 'l:' .. c, 's:' .. c, 'o:' .. c, 'b:' .. c)
  redis.call('ZREM', CONNS, c)
end

-- Forgets the connections idle for `idle` ms with no poll in flight and nothing held;
-- returns how many messages expired on the way.
local function forget_idle(idle, ttl)
  local n = 0
  for _, c in ipairs(redis.call('ZRANGEBYSCORE', CONNS, '-inf', now - idle)) do
    if num(redis.call('HGET', H, 'l:' .. c)) <= now then
      n = n + expire(M(c), ttl) + expire(R(c), ttl)
      if held(c) == 0 then drop_conn(c) end
    end
  end
  return n
end

-- Opens connection `c`, evicting the least recently active one with no poll in flight when
-- the peer is full; returns the messages evicted, or -1 when every connection is polling.
local function open_conn(c, max_per_peer, opener)
  local evicted = 0
  if redis.call('ZCARD', CONNS) >= max_per_peer then
    local victim = nil
    for _, v in ipairs(redis.call('ZRANGE', CONNS, 0, -1)) do
      if num(redis.call('HGET', H, 'l:' .. v)) <= now then victim = v break end
    end
    if not victim then return -1 end
    evicted = held(victim)
    drop_conn(victim)
  end
  redis.call('ZADD', CONNS, now, c)
  redis.call('HSET', H, 'o:' .. c, opener)
  return evicted
end

-- Whether the budget entry named by `field` is due for a refresh (then marked refreshed).
local function budget_due(field, span)
  if num(redis.call('HGET', H, field)) < now + span then
    redis.call('HSET', H, field, now + 2 * span + 1000)
    return true
  end
  return false
end

-- Gives the peer's keys (and connection `c`'s) their TTL again.
local function keep(keep_ms, c)
  redis.call('PEXPIRE', H, keep_ms)
  redis.call('PEXPIRE', CONNS, keep_ms)
  redis.call('PEXPIRE', D, keep_ms)
  if c then
    redis.call('PEXPIRE', M(c), keep_ms)
    redis.call('PEXPIRE', R(c), keep_ms)
    redis.call('PEXPIRE', RV(c), keep_ms)
  end
end
