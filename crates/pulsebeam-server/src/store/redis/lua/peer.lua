-- One peer's keys and the helpers of the mailbox scripts (store/redis/mod.rs describes the
-- keys). Every key a script touches is declared: the peer's hash, connection set and discovery
-- queue, and the three keys (`boxes`) of each connection the caller named; a script that
-- needs another connection's keys touches nothing and answers NEED_KEYS naming it, and the
-- node calls again with them. No helper reads a whole mailbox: what a call reads is bounded
-- by what it hands out (and a few members more), however full the mailboxes are.
local now = now_ms()
local H, CONNS, D = h, conns, d
local DECLARED = {}
for _, k in ipairs(boxes) do DECLARED[k] = true end
local function M(c) return base .. 'm:' .. c end
local function R(c) return base .. 'r:' .. c end
local function RV(c) return base .. 'rv:' .. c end
-- Whether the keys of connection `c` are declared.
local function has(c) return DECLARED[M(c)] and DECLARED[R(c)] and DECLARED[RV(c)] or false end

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
  if redis.call('HEXISTS', H, 'seq') == 1 then return '' end
  local ids = redis.call('ZRANGE', CONNS, 0, -1)
  if c then ids[#ids + 1] = c end
  return undeclared(ids)
end

-- Most expired members one call drops from the head of a full mailbox.
local EXPIRE_STEP = 8

-- Whether a stored member `seq|ms|envelope` is younger than `ttl`.
local function fresh(m, ttl)
  local a = string.find(m, '|', 1, true)
  local b = string.find(m, '|', a + 1, true)
  return now - tonumber(string.sub(m, a + 1, b - 1)) < ttl
end

-- Drops up to EXPIRE_STEP expired members from the head (the oldest end) of `key`, reading one
-- member at a time; returns how many.
local function expire_head(key, ttl)
  local n = 0
  while n < EXPIRE_STEP do
    local head = redis.call('ZRANGE', key, 0, 0)[1]
    if not head or fresh(head, ttl) then break end
    redis.call('ZREMRANGEBYRANK', key, 0, 0)
    n = n + 1
  end
  return n
end

-- The highest score in `key`; 0 when it is empty.
local function top_score(key)
  return num(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
end

-- The peer's next sequence number. A counter that starts afresh (the peer's first message, or
-- its hash evicted or expired before its mailboxes) starts above every message still stored,
-- so order never depends on the counter outliving the mail.
local function next_seq(c)
  local seq = redis.call('HINCRBY', H, 'seq', 1)
  if seq == 1 then
    local top = top_score(D)
    local ids = redis.call('ZRANGE', CONNS, 0, -1)
    if c then ids[#ids + 1] = c end
    for _, k in ipairs(ids) do
      top = math.max(top, top_score(M(k)), top_score(R(k)))
    end
    if top >= seq then
      seq = top + 1
      redis.call('HSET', H, 'seq', seq)
    end
  end
  return seq
end

-- Puts messages reserved for `c` back into its mailbox, in sequence order: with `all` every
-- reservation (a newer poll takes over what older ones handed out), else those whose lease ran
-- out.
local function reclaim(c, all)
  if all then
    if redis.call('ZCARD', R(c)) > 0 then
      redis.call('ZUNIONSTORE', M(c), 2, M(c), R(c))
      redis.call('DEL', R(c))
    end
    redis.call('DEL', RV(c))
    return
  end
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

-- Reserves up to `limit` messages of `c` under `receipt` for `lease` ms and returns them, and
-- how many of those read had expired (dropped instead).
local function take(c, receipt, limit, lease, ttl)
  local ms = redis.call('ZRANGE', M(c), 0, limit - 1, 'WITHSCORES')
  local out, seqs = {}, {}
  for i = 1, #ms, 2 do
    if fresh(ms[i], ttl) then
      out[#out + 1] = ms[i]
      seqs[#seqs + 1] = ms[i + 1]
      redis.call('ZADD', R(c), ms[i + 1], ms[i])
    end
  end
  local read = #ms / 2
  if read > 0 then redis.call('ZREMRANGEBYRANK', M(c), 0, read - 1) end
  if #out > 0 then
    redis.call('HSET', RV(c), receipt, (now + lease) .. ' ' .. table.concat(seqs, ' '))
  end
  return out, read - #out
end

-- Milliseconds until the first lease of `c`'s reservations runs out; 0 when there are none.
local function lease_left(c)
  local first = nil
  for _, v in ipairs(redis.call('HVALS', RV(c))) do
    local at = tonumber(string.match(v, '^%d+'))
    if at and (not first or at < first) then first = at end
  end
  if not first then return 0 end
  return math.max(first - now, 1)
end

-- Messages of `c` waiting or reserved.
local function held(c)
  return redis.call('ZCARD', M(c)) + redis.call('ZCARD', R(c))
end

-- Whether a queue `key` is full at `cap` waiting messages, or `all` messages held (waiting and
-- reserved) reach twice that: counted, never read.
local function full(key, all, cap)
  return redis.call('ZCARD', key) >= cap or all >= 2 * cap
end

local function drop_conn(c)
  redis.call('DEL', M(c), R(c), RV(c))
  redis.call('HDEL', H, 'g:' .. c, 'n:' .. c, 'l:' .. c, 's:' .. c, 'o:' .. c, 'b:' .. c)
  redis.call('ZREM', CONNS, c)
end

-- Forgets the connections idle for `idle` ms with no poll in flight and nothing held (a
-- mailbox of expired messages empties when its key's TTL runs out), of those declared; the
-- others stay until a call declares them or they are evicted.
local function forget_idle(idle)
  for _, c in ipairs(redis.call('ZRANGEBYSCORE', CONNS, '-inf', now - idle)) do
    if has(c) and num(redis.call('HGET', H, 'l:' .. c)) <= now and held(c) == 0 then
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
  for _, v in ipairs(redis.call('ZRANGE', CONNS, 0, -1)) do
    if num(redis.call('HGET', H, 'l:' .. v)) <= now
        and (opener == 'p' or redis.call('HGET', H, 'o:' .. v) == 'm') then
      return v
    end
  end
  return false
end

-- Opens connection `c` for `opener`, evicting `victim` (from victim_for) if any; returns the
-- messages evicted.
local function open_conn(c, victim, opener)
  local evicted = 0
  if victim then
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
