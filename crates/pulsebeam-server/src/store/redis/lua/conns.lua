-- A peer's connections and mailboxes (after peer.lua and hold.lua): sequence numbers,
-- capacity, expiry from full mailboxes, idle connections, eviction and budgets.

-- The connections among `ids` whose keys are not declared, space-separated ('' when none).
local function undeclared(ids)
  local out = {}
  for _, c in ipairs(ids) do
    if not has(c) then out[#out + 1] = c end
  end
  return table.concat(out, ' ')
end

-- When the sequence counter is gone (a new peer, or its hash evicted or expired), the
-- connections whose keys next_seq must read and the caller did not declare ('' when none).
local function seq_needs(c)
  if get('seq') then return '' end
  local ids = redis.call('ZRANGE', CONNS, 0, -1)
  if c then ids[#ids + 1] = c end
  return undeclared(ids)
end

-- Most expired members one call drops from the head of a full mailbox.
local EXPIRE_STEP = 8

-- Drops up to EXPIRE_STEP expired members from the head (the oldest end) of `key`, reading one
-- member at a time; returns how many, and whether that left `key` empty.
local function expire_head(key, ttl)
  local n = 0
  while n < EXPIRE_STEP do
    local head = redis.call('ZRANGE', key, 0, 0)[1]
    if not head then return n, true end
    if fresh(head, ttl) then break end
    redis.call('ZREMRANGEBYRANK', key, 0, 0)
    n = n + 1
  end
  return n, false
end

-- The highest score in `key`; 0 when it is empty.
local function top_score(key)
  return num(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
end

-- The peer's next sequence number. A counter that starts afresh (the peer's first message, or
-- its hash evicted or expired before its mailboxes) starts above every message still stored,
-- so order never depends on the counter outliving the mail.
local function next_seq(c)
  local seq = num(get('seq')) + 1
  if seq == 1 then
    local top = top_score(D)
    local ids = redis.call('ZRANGE', CONNS, 0, -1)
    if c then ids[#ids + 1] = c end
    for _, k in ipairs(ids) do
      top = math.max(top, top_score(M(k)), top_score(R(k)))
    end
    if top >= seq then seq = top + 1 end
  end
  set('seq', seq)
  return seq
end

-- Whether connection `c`'s mailbox is full at `cap` waiting messages, or all messages held
-- (waiting and reserved) reach twice that: counted, never read. `listed` (what its
-- reservations list, never fewer than are stored) spares counting the reserved ones when
-- they cannot make it full.
local function box_full(c, waiting, listed, cap)
  if waiting >= cap then return true end
  if waiting + listed < 2 * cap then return false end
  return waiting + redis.call('ZCARD', R(c)) >= 2 * cap
end

-- Messages of `c` waiting or reserved.
local function held(c)
  return redis.call('ZCARD', M(c)) + redis.call('ZCARD', R(c))
end

local function drop_conn(c)
  redis.call('DEL', M(c), R(c), RV(c))
  parsed[c] = nil
  for _, f in ipairs({'g:', 'n:', 'l:', 's:', 'o:', 'b:', 'k:', 'v:', 'a:', 'w:', 'h:', 'x:',
      'e:'}) do
    set(f .. c, false)
  end
  redis.call('ZREM', CONNS, c)
end

-- Forgets the connections idle for `idle` ms with no poll in flight and nothing held (a
-- mailbox of expired messages empties when its key's TTL runs out), of those declared; the
-- others stay until a call declares them or they are evicted. Looked for when a connection
-- opens, else at most every quarter of `idle` (field `f`: when next).
local function forget_idle(idle, opening)
  if not opening and num(get('f')) > now then return end
  set('f', now + math.floor(idle / 4))
  local ids = redis.call('ZRANGEBYSCORE', CONNS, '-inf', now - idle - ACTIVITY_STEP)
  local names = {}
  for _, c in ipairs(ids) do names[#names + 1] = 'l:' .. c end
  if #names > 0 then fetch(names) end
  for _, c in ipairs(ids) do
    if has(c) and num(get('l:' .. c)) <= now and held(c) == 0 then
      drop_conn(c)
    end
  end
end

-- Room for a new connection opened by `opener` (`p` a poll, `m` a sender): nil when the peer
-- has room, else the connection to evict (the least recently active with no poll in flight;
-- a sender may evict only a mailbox a sender opened, never one its receiver polled), or false
-- when none may go.
local function victim_for(opener, max_per_peer)
  if redis.call('ZCARD', CONNS) < max_per_peer then return nil end
  local ids = redis.call('ZRANGE', CONNS, 0, -1)
  local names = {}
  for _, v in ipairs(ids) do
    names[#names + 1] = 'l:' .. v
    names[#names + 1] = 'o:' .. v
  end
  fetch(names)
  for _, v in ipairs(ids) do
    if num(get('l:' .. v)) <= now and (opener == 'p' or get('o:' .. v) == 'm') then
      return v
    end
  end
  return false
end

-- Opens connection `c` for `opener`, evicting `victim` (from victim_for) if any; returns the
-- messages evicted.
local function open_conn(c, victim, opener, keep_ms)
  local evicted = 0
  if victim then
    evicted = held(victim)
    drop_conn(victim)
  end
  touch(c, keep_ms)
  expire_new(CONNS, keep_ms)
  set('o:' .. c, opener)
  return evicted
end

-- Whether the budget entry named by `field` is due for a refresh (then marked refreshed).
local function budget_due(field, span)
  if num(get(field)) < now + span then
    set(field, now + 2 * span + 1000)
    return true
  end
  return false
end
