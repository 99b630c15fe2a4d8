-- Stores one message for connection `conn`, or for the peer's discovery queue when `conn` is
-- '0' (then for the connection whose poll in flight began last, if any): capacity, sequence
-- number, TTLs and the wake-up of the node whose poll waits for it. A poll waiting on an empty
-- mailbox gets the message in the wake-up itself: reserved for that poll, which this ends,
-- and carried to its node; until the poll's batch window is over, later mail goes to the
-- mailbox and wakes it as before (a connection in that window counts as in flight for
-- discovery).
now = now_ms()
local direct = conn ~= '0'
local names, vals
if direct then
  names = {'seq', 'k', 'f', 'la', 'o:' .. conn, 'l:' .. conn, 'n:' .. conn, 'b:' .. conn,
    'k:' .. conn, 'v:' .. conn, 'g:' .. conn, 'w:' .. conn, 'h:' .. conn, 'a:' .. conn,
    'x:' .. conn, 'e:' .. conn}
  vals = redis.call('HMGET', h, unpack(names))
  -- The common case in straight-line code, none of the general path's tables: a message for
  -- an open connection with nothing reserved, and no upkeep due (idle connections, TTLs, the
  -- budget, activity). It does what the general path below does in that case, command for
  -- command; in any other it hands over to it, which reads nothing twice.
  local seq, o, l, gen = num(vals[1]), vals[5], num(vals[6]), num(vals[11])
  if FAST_PATH and seq > 0 and o and (not vals[10] or vals[10] == '') and num(vals[3]) > now
      and num(vals[2]) >= now + keep_ms and num(vals[9]) >= now + keep_ms
      and (o ~= 'm' or num(vals[8]) >= now + ttl_ms) then
    local box = base .. 'm:' .. conn
    -- A mailbox the current poll's begin (or take) emptied (`e:c`, its generation) is empty
    -- until mail goes to it, which unsets the hint: it needs no count. (Mail to a poll that
    -- waits on it is handed over.)
    local polled = l > now and num(vals[15]) == gen
    local waiting = 0
    if gen > 0 and num(vals[16]) == gen then
      -- (not counted)
    else
      waiting = redis.call('ZCARD', box)
    end
    local handover = waiting == 0 and polled
    if waiting < capacity and not (handover and (vals[4] ~= conn
        or num(vals[14]) + ACTIVITY_STEP <= now)) then
      -- (the fast path)
      local s = int(seq + 1)
      local member = s .. fmt('|%d|', now) .. envelope
      local publish = sharded and 'SPUBLISH' or 'PUBLISH'
      local channel = channel_prefix .. (vals[7] or '')
      local key = base .. conn
      if handover then
        local r = base .. 'r:' .. conn
        redis.call('ZADD', r, s, member)
        redis.call('PEXPIRE', r, int(2 * keep_ms))
        redis.call(publish, channel, fmt('\1%d:%d:', gen, #key) .. key .. member)
        redis.call('HSET', h, 'seq', s, names[10], fmt('%d %d ', gen, now + ack_lease_ms) .. s,
          names[6], '0', names[13], int(now + num(vals[12])))
      else
        redis.call('ZADD', box, s, member)
        if waiting == 0 then redis.call('PEXPIRE', box, int(2 * keep_ms)) end
        if l > now or num(vals[13]) > now then redis.call(publish, channel, key) end
        if num(vals[16]) ~= 0 then
          redis.call('HSET', h, 'seq', s, names[16], '0')
        else
          redis.call('HSET', h, 'seq', s)
        end
      end
      return reply{status = S.OK, budget_member = o == 'm' and conn or nil}
    end
  end
end
enter(h, conns, d, boxes, base)
-- Every reply, OK or not, writes the hash and keeps the peer's keys' TTLs.
on_reply = function() keep(keep_ms) end
if direct then
  cache = sized(names, vals)
else
  fetch({'seq', 'k', 'f', 'la', 'b:d'})
end
forget_idle(idle_ms, direct and not get('o:' .. conn))
local target = nil
local evicted, victim = 0, nil
if not direct then
  local ids = redis.call('ZRANGE', CONNS, 0, -1)
  local names = {}
  for _, c in ipairs(ids) do
    names[#names + 1] = 'l:' .. c
    names[#names + 1] = 's:' .. c
    names[#names + 1] = 'h:' .. c
  end
  fetch(names)
  local best = -1
  for _, c in ipairs(ids) do
    if num(get('l:' .. c)) > now or num(get('h:' .. c)) > now then
      local s = num(get('s:' .. c))
      if s > best then target, best = c, s end
    end
  end
  if target and not has(target) then
    return reply{status = S.NEED_KEYS, need = target}
  end
  if target then
    fetch({'o:' .. target, 'n:' .. target, 'b:' .. target, 'k:' .. target, 'v:' .. target,
      'g:' .. target, 'w:' .. target, 'a:' .. target, 'x:' .. target, 'e:' .. target})
  end
else
  if not get('o:' .. conn) then
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
if target and not get('o:' .. target) then
  if not granted then
    return reply{status = S.NEED_BUDGET, budget_member = conn}
  end
  evicted = open_conn(conn, victim, 'm', keep_ms)
  set('b:' .. conn, now + 2 * ttl_ms + 1000)
end
local expired = 0
local due, budget_member = false, ''
if target then
  -- Counted first; expired messages are dropped (a few, from the head) only from a full mailbox.
  local listed = 0
  for _, parts in ipairs(reservations(target)) do listed = listed + #parts - 2 end
  -- A mailbox the current poll emptied is empty until mail goes to it (`e:c`, begin.lua).
  local gen = num(get('g:' .. target))
  local waiting = 0
  if not (gen > 0 and num(get('e:' .. target)) == gen) then
    waiting = redis.call('ZCARD', M(target))
  end
  if box_full(target, waiting, listed, capacity) then
    local from_reserved, none_left = expire_head(R(target), ttl_ms)
    expired = expire_head(M(target), ttl_ms) + from_reserved
    waiting = redis.call('ZCARD', M(target))
    -- Every reserved message expired: so did the reservations (the next one makes the key).
    if none_left then
      store_reservations(target, {})
      listed = 0
    end
    if box_full(target, waiting, listed, capacity) then
      return reply{status = S.FULL, evicted = evicted, expired = expired, evicted_conn = victim}
    end
  end
  local seq = next_seq(target)
  local s = int(seq)
  local member = s .. fmt('|%d|', now) .. envelope
  local publish = sharded and 'SPUBLISH' or 'PUBLISH'
  local channel = channel_prefix .. (get('n:' .. target) or '')
  if waiting == 0 and num(get('l:' .. target)) > now and num(get('x:' .. target)) == gen then
    -- Handed over: `\1<generation>:<key length>:<key><member>` tells the node which poll.
    reserve(target, gen, ack_lease_ms, {s, member}, keep_ms)
    set('l:' .. target, 0)
    set('h:' .. target, now + num(get('w:' .. target)))
    touch(target, keep_ms)
    local key = base .. target
    redis.call(publish, channel, fmt('\1%d:%d:', gen, #key) .. key .. member)
  else
    redis.call('ZADD', M(target), s, member)
    if waiting == 0 then expire_new(M(target), keep_ms) end
    -- (the mailbox is no longer known empty: `e:c`, begin.lua)
    if num(get('e:' .. target)) ~= 0 then set('e:' .. target, 0) end
    if num(get('l:' .. target)) > now or num(get('h:' .. target)) > now then
      redis.call(publish, channel, base .. target)
    end
  end
  if get('o:' .. target) == 'm' then
    due, budget_member = budget_due('b:' .. target, ttl_ms), target
  end
else
  local n = redis.call('ZCARD', D)
  if n >= capacity then
    expired = expire_head(D, ttl_ms)
    n = redis.call('ZCARD', D)
    if n >= capacity then
      return reply{status = S.FULL, expired = expired}
    end
  end
  if n == 0 and not granted then
    return reply{status = S.NEED_BUDGET, budget_member = 'd', expired = expired}
  end
  if n == 0 then set('b:d', now + 2 * ttl_ms + 1000) end
  local seq = next_seq(nil)
  local s = int(seq)
  redis.call('ZADD', D, s, s .. fmt('|%d|', now) .. envelope)
  if n == 0 then expire_new(D, keep_ms) end
  due, budget_member = budget_due('b:d', ttl_ms), 'd'
end
keep(keep_ms, target)
return reply{status = S.OK, budget_due = due, budget_member = budget_member, evicted = evicted,
  expired = expired, evicted_conn = victim}
