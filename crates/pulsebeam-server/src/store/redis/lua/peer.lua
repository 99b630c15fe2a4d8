-- One peer's keys and the helpers of the mailbox scripts (store/redis/mod.rs describes the
-- keys). Every key a script touches is declared: the peer's hash, connection set and discovery
-- queue, and the keys (`boxes`) of each connection the caller named; a script that needs
-- another connection's keys touches nothing and answers NEED_KEYS naming it, and the node
-- calls again with them. No helper reads a whole mailbox: what a call reads is bounded by what
-- it hands out (and a few members more), however full the mailboxes are.
--
-- What a call costs Redis is counted in commands, so the peer's hash is read once (HMGET of
-- the fields the script names up front, `fetch`) and written once (`flush`, on every reply):
-- `get` and `set` work on that copy. Key TTLs are given when a key is made and refreshed only
-- when less than a keep span is left (`keep`).

-- Redis server time (ms); set by every script that needs it (`now = now_ms()`), not by ack.
local now = 0
local H, CONNS, D = h, conns, d
local DECLARED = {}
for _, k in ipairs(boxes) do DECLARED[k] = true end
local function M(c) return base .. 'm:' .. c end
local function R(c) return base .. 'r:' .. c end
local function RV(c) return base .. 'rv:' .. c end
-- Whether the keys of connection `c` are declared.
local function has(c) return DECLARED[M(c)] and DECLARED[R(c)] and DECLARED[RV(c)] or false end

-- The hash's fields as read (false when absent) and those changed since.
local cache, dirty = {}, {}

-- Reads the fields `names` not read yet, in one HMGET.
local function fetch(names)
  local want = {}
  for _, n in ipairs(names) do
    if cache[n] == nil then want[#want + 1] = n end
  end
  if #want == 0 then return end
  local vals = redis.call('HMGET', H, unpack(want))
  for i, n in ipairs(want) do cache[n] = vals[i] end
end

local function get(n)
  if cache[n] == nil then fetch({n}) end
  return cache[n]
end

-- Sets field `n` to `v` (false deletes it) when the hash is written.
local function set(n, v)
  cache[n] = v
  dirty[n] = true
end

-- Writes the changed fields: one HSET, and one HDEL when some were deleted.
local function flush()
  local put, del = {}, {}
  for n in pairs(dirty) do
    local v = cache[n]
    if v then
      put[#put + 1] = n
      put[#put + 1] = v
    else
      del[#del + 1] = n
    end
  end
  dirty = {}
  if #put > 0 then redis.call('HSET', H, unpack(put)) end
  if #del > 0 then redis.call('HDEL', H, unpack(del)) end
end
on_reply = flush

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

-- Whether a stored member `seq|ms|envelope` is younger than `ttl`.
local function fresh(m, ttl)
  local a = string.find(m, '|', 1, true)
  local b = string.find(m, '|', a + 1, true)
  return now - tonumber(string.sub(m, a + 1, b - 1)) < ttl
end

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

-- TTLs. Every key of a peer gets twice `keep_ms` when it is made, and again on a call that
-- finds less than `keep_ms` left (the deadline is kept in the hash: `k` for the hash,
-- connection set and discovery queue, `k:c` for connection c's keys), so after every call
-- each key it touched has at least `keep_ms` left, as if refreshed on every call.
local made = {}

-- Gives `key`, just made by a write, its TTL (at once: a reply that is not OK keeps it too).
local function expire_new(key, keep_ms)
  if not made[key] then
    made[key] = true
    redis.call('PEXPIRE', key, 2 * keep_ms)
  end
end

-- Refreshes the TTLs of the peer's keys (and connection `c`'s) that have less than `keep_ms`
-- left, then writes the hash.
local function keep(keep_ms, c)
  local peer_due = num(get('k')) < now + keep_ms
  local conn_due = c and num(get('k:' .. c)) < now + keep_ms
  if peer_due then set('k', now + 2 * keep_ms) end
  if conn_due then set('k:' .. c, now + 2 * keep_ms) end
  flush()
  local span = 2 * keep_ms
  if peer_due then
    redis.call('PEXPIRE', H, span)
    redis.call('PEXPIRE', CONNS, span)
    redis.call('PEXPIRE', D, span)
  end
  if conn_due then
    redis.call('PEXPIRE', M(c), span)
    redis.call('PEXPIRE', R(c), span)
  end
end

-- Reservations. Field `v:c` of the hash lists connection c's polls whose messages wait for an
-- acknowledgement, `receipt expiry seq seq ...` each, separated by ';'.
local function reservations(c)
  local out = {}
  local v = get('v:' .. c)
  if v then
    for entry in string.gmatch(v, '[^;]+') do out[#out + 1] = words(entry) end
  end
  return out
end

local function store_reservations(c, list)
  if #list == 0 then
    if get('v:' .. c) then set('v:' .. c, false) end
    return
  end
  local s = {}
  for i, parts in ipairs(list) do s[i] = table.concat(parts, ' ') end
  set('v:' .. c, table.concat(s, ';'))
end

-- The sequence numbers `parts[3..]` as ranges of consecutive numbers, {first, last} each:
-- what one poll took is usually one range, removed or moved in one command.
local function ranges(parts)
  local out = {}
  for j = 3, #parts do
    local s = tonumber(parts[j])
    local prev = out[#out]
    if prev and s == prev[2] + 1 then prev[2] = s else out[#out + 1] = {s, s} end
  end
  return out
end

-- Puts messages reserved for `c` back into its mailbox, in sequence order: with `all` every
-- reservation (a newer poll takes over what older ones handed out), else those whose lease ran
-- out.
local function reclaim(c, all, keep_ms)
  if all then
    if redis.call('ZCARD', R(c)) > 0 then
      redis.call('ZUNIONSTORE', M(c), 2, M(c), R(c))
      redis.call('DEL', R(c))
      expire_new(M(c), keep_ms)
    end
    store_reservations(c, {})
    return
  end
  local kept, moved = {}, false
  for _, parts in ipairs(reservations(c)) do
    if num(parts[2]) <= now then
      for _, r in ipairs(ranges(parts)) do
        local ms = redis.call('ZRANGEBYSCORE', R(c), r[1], r[2], 'WITHSCORES')
        if #ms > 0 then
          local add = {}
          for i = 1, #ms, 2 do
            add[#add + 1] = ms[i + 1]
            add[#add + 1] = ms[i]
          end
          redis.call('ZADD', M(c), unpack(add))
          redis.call('ZREMRANGEBYSCORE', R(c), r[1], r[2])
          moved = true
        end
      end
    else
      kept[#kept + 1] = parts
    end
  end
  if moved then expire_new(M(c), keep_ms) end
  store_reservations(c, kept)
end

-- Deletes what the poll with `receipt` reserved; returns how many messages.
local function ack(c, receipt)
  local list = reservations(c)
  for i, parts in ipairs(list) do
    if parts[1] == receipt then
      local n = 0
      for _, r in ipairs(ranges(parts)) do
        n = n + redis.call('ZREMRANGEBYSCORE', R(c), r[1], r[2])
      end
      table.remove(list, i)
      store_reservations(c, list)
      return n
    end
  end
  return 0
end

-- Reserves up to `limit` messages of `c` under `receipt` for `lease` ms and returns them, and
-- how many of those read had expired (dropped instead).
local function take(c, receipt, limit, lease, ttl, keep_ms)
  if limit <= 0 then return {}, 0 end
  local ms = redis.call('ZPOPMIN', M(c), limit)
  local out, entry, add = {}, {tostring(receipt), tostring(now + lease)}, {}
  for i = 1, #ms, 2 do
    if fresh(ms[i], ttl) then
      out[#out + 1] = ms[i]
      entry[#entry + 1] = ms[i + 1]
      add[#add + 1] = ms[i + 1]
      add[#add + 1] = ms[i]
    end
  end
  if #out > 0 then
    local list = reservations(c)
    redis.call('ZADD', R(c), unpack(add))
    -- Nothing reserved before: the reservations' key is new.
    if #list == 0 then expire_new(R(c), keep_ms) end
    list[#list + 1] = entry
    store_reservations(c, list)
  end
  return out, #ms / 2 - #out
end

-- Milliseconds until the first lease of `c`'s reservations runs out; 0 when there are none.
local function lease_left(c)
  local first = nil
  for _, parts in ipairs(reservations(c)) do
    local at = tonumber(parts[2])
    if at and (not first or at < first) then first = at end
  end
  if not first then return 0 end
  return math.max(first - now, 1)
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

-- Connection activity (the score in CONNS, which orders eviction) is written unless the
-- connection is already the most recently active one (field `la`) and its score is younger
-- than this many ms (field `a:c`); forgetting an idle connection allows for that lag, so none
-- is forgotten early, and the eviction order is exact.
local ACTIVITY_STEP = 1000

-- Records activity of connection `c` (opened, polled, handed out).
local function touch(c)
  if get('la') == c and num(get('a:' .. c)) + ACTIVITY_STEP > now then return end
  redis.call('ZADD', CONNS, now, c)
  set('la', c)
  set('a:' .. c, now)
end

local function drop_conn(c)
  redis.call('DEL', M(c), R(c), RV(c))
  for _, f in ipairs({'g:', 'n:', 'l:', 's:', 'o:', 'b:', 'k:', 'v:', 'a:'}) do
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
  touch(c)
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
