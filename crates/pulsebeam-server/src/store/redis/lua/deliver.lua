-- Stores one message for connection `conn`, or for the peer's discovery queue when `conn` is
-- '0' (then for the connection whose poll in flight began last, if any): capacity, sequence
-- number, TTLs and the wake-up of the node whose poll waits for it.
forget_idle(idle_ms)
local target = nil
local evicted, victim = 0, nil
if conn == '0' then
  local best = -1
  for _, c in ipairs(redis.call('ZRANGE', CONNS, 0, -1)) do
    if num(redis.call('HGET', H, 'l:' .. c)) > now then
      local s = num(redis.call('HGET', H, 's:' .. c))
      if s > best then target, best = c, s end
    end
  end
  if target and not has(target) then
    return reply{status = S.NEED_KEYS, need = target}
  end
else
  if not redis.call('ZSCORE', CONNS, conn) then
    victim = victim_for('m', max_per_peer)
    if victim == false then
      return reply{status = S.TOO_MANY_PEER, budget_member = conn}
    end
    if victim and not has(victim) then
      return reply{status = S.NEED_KEYS, need = victim}
    end
  end
  target = conn
end
local need = seq_needs(target)
if need ~= '' then return reply{status = S.NEED_KEYS, need = need} end
if target and not redis.call('ZSCORE', CONNS, target) then
  if not granted then
    return reply{status = S.NEED_BUDGET, budget_member = conn}
  end
  evicted = open_conn(conn, victim, 'm')
  redis.call('HSET', H, 'b:' .. conn, now + 2 * ttl_ms + 1000)
end
local expired = 0
local due, member = false, ''
if target then
  -- Counted first; expired messages are dropped (a few, from the head) only from a full mailbox.
  if full(M(target), held(target), capacity) then
    expired = expire_head(M(target), ttl_ms) + expire_head(R(target), ttl_ms)
    if full(M(target), held(target), capacity) then
      return reply{status = S.FULL, evicted = evicted, expired = expired, evicted_conn = victim}
    end
  end
  local seq = next_seq(target)
  redis.call('ZADD', M(target), seq, seq .. '|' .. now .. '|' .. envelope)
  if num(redis.call('HGET', H, 'l:' .. target)) > now then
    redis.call('PUBLISH', channel_prefix .. (redis.call('HGET', H, 'n:' .. target) or ''), base .. target)
  end
  if redis.call('HGET', H, 'o:' .. target) == 'm' then
    due, member = budget_due('b:' .. target, ttl_ms), target
  end
else
  if full(D, 0, capacity) then
    expired = expire_head(D, ttl_ms)
    if full(D, 0, capacity) then
      return reply{status = S.FULL, expired = expired}
    end
  end
  local n = redis.call('ZCARD', D)
  if n == 0 and not granted then
    return reply{status = S.NEED_BUDGET, budget_member = 'd', expired = expired}
  end
  if n == 0 then redis.call('HSET', H, 'b:d', now + 2 * ttl_ms + 1000) end
  local seq = next_seq(nil)
  redis.call('ZADD', D, seq, seq .. '|' .. now .. '|' .. envelope)
  due, member = budget_due('b:d', ttl_ms), 'd'
end
keep(keep_ms, target)
return reply{status = S.OK, budget_due = due, budget_member = member, evicted = evicted,
  expired = expired, evicted_conn = victim}
