-- Stores one message for connection ARG.conn, or for the peer's discovery queue when ARG.conn
-- is 0 (then for the connection whose poll in flight began last, if any): capacity, sequence
-- number, TTLs and the wake-up of the node whose poll waits for it.
local c, ttl, cap = ARG.conn, ARG.ttl_ms, ARG.capacity
local expired = forget_idle(ARG.idle_ms, ttl)
local target = nil
local evicted = 0
if c == 0 then
  local best = -1
  for _, v in ipairs(redis.call('ZRANGE', CONNS, 0, -1)) do
    if num(redis.call('HGET', H, 'l:' .. v)) > now then
      local s = num(redis.call('HGET', H, 's:' .. v))
      if s > best then target, best = v, s end
    end
  end
else
  if not redis.call('ZSCORE', CONNS, c) then
    if not ARG.granted then
      return reply{status = S.NEED_BUDGET, budget_member = c, expired = expired}
    end
    evicted = open_conn(c, ARG.max_per_peer, 'm')
    if evicted < 0 then
      return reply{status = S.TOO_MANY_PEER, budget_member = c, expired = expired}
    end
    redis.call('HSET', H, 'b:' .. c, now + 2 * ttl + 1000)
  end
  target = c
end
local due, member = false, ''
if target then
  expired = expired + expire(M(target), ttl) + expire(R(target), ttl)
  if redis.call('ZCARD', M(target)) >= cap or held(target) >= 2 * cap then
    return reply{status = S.FULL, evicted = evicted, expired = expired}
  end
  local seq = redis.call('HINCRBY', H, 'seq', 1)
  redis.call('ZADD', M(target), seq, seq .. '|' .. now .. '|' .. ARG.envelope)
  if num(redis.call('HGET', H, 'l:' .. target)) > now then
    redis.call('PUBLISH', ARG.channel_prefix .. (redis.call('HGET', H, 'n:' .. target) or ''), base .. target)
  end
  if redis.call('HGET', H, 'o:' .. target) == 'm' then
    due, member = budget_due('b:' .. target, ttl), target
  end
else
  expired = expired + expire(D, ttl)
  local n = redis.call('ZCARD', D)
  if n >= cap then
    return reply{status = S.FULL, evicted = evicted, expired = expired}
  end
  if n == 0 and not ARG.granted then
    return reply{status = S.NEED_BUDGET, budget_member = 'd', expired = expired}
  end
  if n == 0 then redis.call('HSET', H, 'b:d', now + 2 * ttl + 1000) end
  local seq = redis.call('HINCRBY', H, 'seq', 1)
  redis.call('ZADD', D, seq, seq .. '|' .. now .. '|' .. ARG.envelope)
  due, member = budget_due('b:d', ttl), 'd'
end
keep(ARG.keep_ms, target)
return reply{status = S.OK, budget_due = due, budget_member = member, evicted = evicted, expired = expired}
