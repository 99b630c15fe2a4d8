-- Registers a poll of connection ARG.conn on node ARG.node: acknowledges ARG.receipts (what the
-- connection's previous poll handed out), opens the connection if new, ends an older poll (on
-- any node), takes the discovery queue and hands out what is waiting.
local c, ttl, wait = ARG.conn, ARG.ttl_ms, ARG.wait_ms
local acked = 0
for _, receipt in ipairs(ARG.receipts) do acked = acked + ack(c, receipt) end
local expired = forget_idle(ARG.idle_ms, ttl)
local opener = redis.call('HGET', H, 'o:' .. c)
local evicted = 0
if opener ~= 'p' then
  if not ARG.granted then
    return reply{status = S.NEED_BUDGET, expired = expired, acknowledged = acked}
  end
  if not opener then
    evicted = open_conn(c, ARG.max_per_peer, 'p')
    if evicted < 0 then
      return reply{status = S.TOO_MANY_PEER, expired = expired, acknowledged = acked}
    end
  else
    redis.call('HSET', H, 'o:' .. c, 'p')
  end
  redis.call('HSET', H, 'b:' .. c, now + 2 * ARG.budget_span_ms + 1000)
end
if num(redis.call('HGET', H, 'l:' .. c)) > now then
  redis.call('PUBLISH', ARG.channel_prefix .. (redis.call('HGET', H, 'n:' .. c) or ''), base .. c)
end
local gen = redis.call('HINCRBY', H, 'g:' .. c, 1)
redis.call('HSET', H, 'n:' .. c, ARG.node, 'l:' .. c, now + wait + ARG.grace_ms, 's:' .. c, now)
redis.call('ZADD', CONNS, now, c)
expired = expired + expire(D, ttl)
local queued = redis.call('ZRANGE', D, 0, -1, 'WITHSCORES')
for i = 1, #queued, 2 do
  redis.call('ZADD', M(c), queued[i + 1], queued[i])
end
redis.call('DEL', D)
expired = expired + expire(M(c), ttl) + expire(R(c), ttl)
reclaim(c)
local out = take(c, gen, ARG.max, ARG.ack_lease_ms)
if #out > 0 or wait == 0 then
  redis.call('HSET', H, 'l:' .. c, 0)
end
local due = budget_due('b:' .. c, ARG.budget_span_ms)
keep(ARG.keep_ms, c)
return reply({status = S.OK, generation = gen, budget_due = due, evicted = evicted,
  expired = expired, acknowledged = acked}, out)
