-- Registers a poll of connection `conn` on node `node`: opens the connection if new, ends an
-- older poll (on any node), with `takeover` takes back what older polls handed out and nobody
-- acknowledged (else only what is past its lease), takes the discovery queue and hands out what
-- is waiting, oldest first.
forget_idle(idle_ms)
local opener = redis.call('HGET', H, 'o:' .. conn)
local evicted, victim = 0, nil
if not opener then
  victim = victim_for('p', max_per_peer)
  if victim == false then
    return reply{status = S.TOO_MANY_PEER}
  end
  if victim and not has(victim) then
    return reply{status = S.NEED_KEYS, need = victim}
  end
end
if opener ~= 'p' then
  if not granted then
    return reply{status = S.NEED_BUDGET}
  end
  if not opener then
    evicted = open_conn(conn, victim, 'p')
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
if redis.call('ZCARD', D) > 0 then
  redis.call('ZUNIONSTORE', M(conn), 2, M(conn), D)
  redis.call('DEL', D)
end
reclaim(conn, takeover)
local out, expired = take(conn, gen, max, ack_lease_ms, ttl_ms)
local left = 0
if #out > 0 or wait_ms == 0 then
  redis.call('HSET', H, 'l:' .. conn, 0)
else
  left = lease_left(conn)
end
local due = budget_due('b:' .. conn, budget_span_ms)
keep(keep_ms, conn)
return reply({status = S.OK, generation = gen, budget_due = due, evicted = evicted,
  expired = expired, evicted_conn = victim, lease_left_ms = left}, out)
