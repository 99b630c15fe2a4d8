-- Registers a poll of connection `conn` on node `node`: acknowledges `receipts` (what the
-- connection's previous poll handed out), opens the connection if new, ends an older poll (on
-- any node), takes the discovery queue and hands out what is waiting.
local acked = 0
for _, receipt in ipairs(receipts) do acked = acked + ack(conn, receipt) end
local expired = forget_idle(idle_ms, ttl_ms)
local opener = redis.call('HGET', H, 'o:' .. conn)
local evicted = 0
if opener ~= 'p' then
  if not granted then
    return reply{status = S.NEED_BUDGET, expired = expired, acknowledged = acked}
  end
  if not opener then
    evicted = open_conn(conn, max_per_peer, 'p')
    if evicted < 0 then
      return reply{status = S.TOO_MANY_PEER, expired = expired, acknowledged = acked}
    end
  else
    redis.call('HSET', H, 'o:' .. conn, 'p')
  end
  redis.call('HSET', H, 'b:' .. conn, now + 2 * budget_span_ms + 1000)
end
if num(redis.call('HGET', H, 'l:' .. conn)) > now then
  redis.call('PUBLISH', channel_prefix .. (redis.call('HGET', H, 'n:' .. conn) or ''), base .. conn)
end
local gen = redis.call('HINCRBY', H, 'g:' .. conn, 1)
redis.call('HSET', H, 'n:' .. conn, node, 'l:' .. conn, now + wait_ms + grace_ms, 's:' .. conn, now)
redis.call('ZADD', CONNS, now, conn)
expired = expired + expire(D, ttl_ms)
local queued = redis.call('ZRANGE', D, 0, -1, 'WITHSCORES')
for i = 1, #queued, 2 do
  redis.call('ZADD', M(conn), queued[i + 1], queued[i])
end
redis.call('DEL', D)
expired = expired + expire(M(conn), ttl_ms) + expire(R(conn), ttl_ms)
reclaim(conn)
local out = take(conn, gen, max, ack_lease_ms)
if #out > 0 or wait_ms == 0 then
  redis.call('HSET', H, 'l:' .. conn, 0)
end
local due = budget_due('b:' .. conn, budget_span_ms)
keep(keep_ms, conn)
return reply({status = S.OK, generation = gen, budget_due = due, evicted = evicted,
  expired = expired, acknowledged = acked}, out)
