-- Registers a poll of connection `conn` on node `node`: opens the connection if new, ends an
-- older poll (on any node), with `takeover` takes back what older polls handed out and nobody
-- acknowledged (else only what is past its lease), takes the discovery queue and hands out what
-- is waiting, oldest first.
enter(h, conns, d, boxes, base)
now = now_ms()
-- Every reply, OK or not, writes the hash and keeps the peer's keys' TTLs.
on_reply = function() keep(keep_ms) end
-- (`x:conn` is written, never read: not fetched)
fetch({'k', 'f', 'la', 'o:' .. conn, 'l:' .. conn, 'n:' .. conn, 'g:' .. conn, 'b:' .. conn,
  'k:' .. conn, 'v:' .. conn, 'a:' .. conn, 'w:' .. conn, 'h:' .. conn})
-- A stream's next poll acknowledges the batch it has just written (every reply writes it).
local acknowledged = 0
if ack_receipt > 0 then acknowledged = ack(conn, int(ack_receipt)) end
forget_idle(idle_ms, not get('o:' .. conn))
local opener = get('o:' .. conn)
local evicted, victim = 0, nil
if not opener then
  victim = victim_for('p', max_per_peer)
  if victim == false then
    return reply{status = S.TOO_MANY_PEER, acknowledged = acknowledged}
  end
  if victim and not has(victim) then
    return reply{status = S.NEED_KEYS, need = victim, acknowledged = acknowledged}
  end
end
if opener ~= 'p' then
  if not granted then
    return reply{status = S.NEED_BUDGET, acknowledged = acknowledged}
  end
  if not opener then
    evicted = open_conn(conn, victim, 'p', keep_ms)
  else
    set('o:' .. conn, 'p')
  end
  set('b:' .. conn, now + 2 * budget_span_ms + 1000)
end
-- An older poll still in flight, or collecting what a deliver handed it, ends.
if num(get('l:' .. conn)) > now or num(get('h:' .. conn)) > now then
  redis.call(sharded and 'SPUBLISH' or 'PUBLISH', channel_prefix .. (get('n:' .. conn) or ''), base .. conn)
end
local gen = num(get('g:' .. conn)) + 1
set('g:' .. conn, gen)
if get('n:' .. conn) ~= node then set('n:' .. conn, node) end
set('l:' .. conn, now + wait_ms + grace_ms)
set('s:' .. conn, now)
-- This poll takes a message handed over in its wake-up (a node of an older version, which
-- does not write `x`, does not), and collects mail for this long after it.
set('x:' .. conn, gen)
if num(get('w:' .. conn)) ~= batch_ms then set('w:' .. conn, batch_ms) end
-- (one collecting still ends; a window that is over needs no write)
if num(get('h:' .. conn)) > now then set('h:' .. conn, 0) end
touch(conn)
if redis.call('ZCARD', D) > 0 then
  redis.call('ZUNIONSTORE', M(conn), 2, M(conn), D)
  redis.call('DEL', D)
  expire_new(M(conn), keep_ms)
end
reclaim(conn, takeover, keep_ms)
local out, expired = take(conn, gen, max, ack_lease_ms, ttl_ms, keep_ms)
local left = 0
if #out > 0 or wait_ms == 0 then
  set('l:' .. conn, 0)
else
  left = lease_left(conn)
end
local due = budget_due('b:' .. conn, budget_span_ms)
keep(keep_ms, conn)
return reply({status = S.OK, generation = gen, budget_due = due, evicted = evicted,
  expired = expired, evicted_conn = victim, lease_left_ms = left, acknowledged = acknowledged}, out)
