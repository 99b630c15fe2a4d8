-- Registers a poll of connection `conn` on node `node`: opens the connection if new, ends an
-- older poll (on any node), with `takeover` takes back what older polls handed out and nobody
-- acknowledged (else only what is past its lease), takes the discovery queue and hands out what
-- is waiting, oldest first.
now = now_ms()
-- (`x:conn` is written, never read: not fetched)
local names = {'k', 'f', 'la', 'o:' .. conn, 'l:' .. conn, 'n:' .. conn, 'g:' .. conn,
  'b:' .. conn, 'k:' .. conn, 'v:' .. conn, 'a:' .. conn, 'w:' .. conn, 'h:' .. conn, 'b:d'}
local vals = redis.call('HMGET', h, unpack(names))
-- The common case in straight-line code, none of the general path's tables: the next poll of
-- a connection a poll opened, with nothing reserved but what this poll acknowledges, nothing
-- in the discovery queue, no takeover, and no upkeep due (idle connections, TTLs, the budget,
-- activity). It does what the general path below does in that case; in any other it hands
-- over to it, which reads nothing twice.
local v = vals[10]
local reserved = v and v ~= ''
local box, held = base .. 'm:' .. conn, base .. 'r:' .. conn
if FAST_PATH and vals[4] == 'p' and num(vals[2]) > now
    and num(vals[1]) >= now + keep_ms and num(vals[9]) >= now + keep_ms
    and num(vals[8]) >= now + budget_span_ms
    and vals[3] == conn and num(vals[11]) + ACTIVITY_STEP > now
    -- (the one reservation, acknowledged now; or none, and so none stored for a takeover to
    -- take back: `v:c` lists whatever the reservations' key holds, written with it, but for
    -- what a node two versions older kept under `rv:c`, which a general path takes back)
    and (not reserved or (not takeover and ack_receipt > 0 and not string.find(v, ';', 1, true)
      and string.find(v, int(ack_receipt) .. ' ', 1, true) == 1))
    -- (`b:d` is 0 or absent once a begin took the discovery queue, until mail goes to it)
    and (num(vals[14]) == 0 or redis.call('ZCARD', d) == 0) then
  -- (the fast path)
  local node_was = vals[6]
  if num(vals[5]) > now or num(vals[13]) > now then
    redis.call(sharded and 'SPUBLISH' or 'PUBLISH', channel_prefix .. (node_was or ''), base .. conn)
  end
  local gen = num(vals[7]) + 1
  local g = int(gen)
  local out, add, expired = {}, nil, 0
  -- With nothing reserved, a mailbox that fits in the poll becomes the reservations' key
  -- (take_whole, hold.lua): `seqs` is then what it took.
  local seqs = nil
  if max > 0 and not reserved then out, seqs = take_whole(box, held, max, ttl_ms) end
  if not seqs then
    out = {}
    if max > 0 then out, add, expired = pop_fresh(box, max, ttl_ms) end
    -- What this poll takes is reserved before what it acknowledges is deleted, so the
    -- reservations' key, when it held those, lives on with its TTL rather than being made anew.
    if #out > 0 then redis.call('ZADD', held, unpack(add)) end
  end
  local acknowledged = 0
  if reserved then
    for _, r in ipairs(ranges(words(v))) do
      acknowledged = acknowledged + redis.call('ZREMRANGEBYSCORE', held, r[1], r[2])
    end
  end
  local waits = #out == 0 and wait_ms > 0
  local put = {'g:' .. conn, g, 's:' .. conn, int(now), 'x:' .. conn, g,
    names[5], waits and int(now + wait_ms + grace_ms) or '0'}
  if #out > 0 then
    if not seqs then
      if acknowledged == 0 then
        redis.call('PEXPIRE', held, int(2 * keep_ms))
      else
        -- (reservations kept)
      end
      seqs = {}
      for i = 1, #add, 2 do seqs[#seqs + 1] = add[i] end
    end
    put[#put + 1] = names[10]
    put[#put + 1] = g .. ' ' .. int(now + ack_lease_ms) .. ' ' .. table.concat(seqs, ' ')
  elseif reserved then
    put[#put + 1] = names[10]
    put[#put + 1] = ''
  end
  if node_was ~= node then
    put[#put + 1] = names[6]
    put[#put + 1] = node
  end
  if num(vals[12]) ~= batch_ms then
    put[#put + 1] = names[12]
    put[#put + 1] = int(batch_ms)
  end
  if num(vals[13]) > now then
    put[#put + 1] = names[13]
    put[#put + 1] = '0'
  end
  if num(vals[14]) ~= 0 then
    put[#put + 1] = names[14]
    put[#put + 1] = '0'
  end
  -- A poll that emptied the mailbox says so, whether it waits or took mail, until mail goes to
  -- it; every poll writes it, so no earlier value (of a connection forgotten and opened again)
  -- stays.
  put[#put + 1] = 'e:' .. conn
  put[#put + 1] = emptied(max, #out + expired) and g or '0'
  redis.call('HSET', h, unpack(put))
  return reply({status = S.OK, generation = gen, expired = expired,
    acknowledged = acknowledged}, out)
end
enter(h, conns, d, boxes, base)
-- Every reply, OK or not, writes the hash and keeps the peer's keys' TTLs.
on_reply = function() keep(keep_ms) end
cache = sized(names, vals)
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
touch(conn, keep_ms)
if redis.call('ZCARD', D) > 0 then
  redis.call('ZUNIONSTORE', M(conn), 2, M(conn), D)
  redis.call('DEL', D)
  expire_remade(M(conn), keep_ms)
end
-- The queue is empty now: the next poll needs not count it until mail goes to it.
if num(get('b:d')) ~= 0 then set('b:d', 0) end
reclaim(conn, takeover, keep_ms)
local out, expired = take(conn, gen, max, ack_lease_ms, ttl_ms, keep_ms)
local left, empty = 0, 0
if #out > 0 or wait_ms == 0 then
  set('l:' .. conn, 0)
else
  left = lease_left(conn)
end
-- A poll that emptied the mailbox says so (as in the fast path above).
if emptied(max, #out + expired) then empty = gen end
set('e:' .. conn, empty)
local due = budget_due('b:' .. conn, budget_span_ms)
keep(keep_ms, conn)
return reply({status = S.OK, generation = gen, budget_due = due, evicted = evicted,
  expired = expired, evicted_conn = victim, lease_left_ms = left, acknowledged = acknowledged}, out)
