-- What a poll holds and hands out (after peer.lua): message freshness, TTLs, taking,
-- reclaiming and lease times of reservations, and connection activity.

-- Whether a stored member `seq|ms|envelope` is younger than `ttl`.
local function fresh(m, ttl)
  local a = string.find(m, '|', 1, true)
  local b = string.find(m, '|', a + 1, true)
  return now - string.sub(m, a + 1, b - 1) < ttl
end

-- TTLs. Every key of a peer gets twice `keep_ms` when it is made, and again on a call that
-- finds less than `keep_ms` left (the deadline is kept in the hash: `k` for the hash,
-- connection set and discovery queue, `k:c` for connection c's keys), so after every call
-- each key it touched has at least `keep_ms` left, as if refreshed on every call.

-- Gives `key`, just made by a write, its TTL (at once: a reply that is not OK keeps it too).
local function expire_new(key, keep_ms)
  if not made[key] then
    made[key] = true
    redis.call('PEXPIRE', key, int(2 * keep_ms))
  end
end

-- Gives `key`, just stored anew (ZUNIONSTORE drops the TTL of the key it writes), its TTL,
-- even where an earlier write of this call gave it one.
local function expire_remade(key, keep_ms)
  made[key] = true
  redis.call('PEXPIRE', key, int(2 * keep_ms))
end

-- Refreshes the TTLs of the peer's keys (and connection `c`'s) that have less than `keep_ms`
-- left, then writes the hash.
local function keep(keep_ms, c)
  local peer_due = num(get('k')) < now + keep_ms
  local conn_due = c and num(get('k:' .. c)) < now + keep_ms
  if peer_due then set('k', now + 2 * keep_ms) end
  if conn_due then set('k:' .. c, now + 2 * keep_ms) end
  flush()
  local span = int(2 * keep_ms)
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

-- Puts messages reserved for `c` back into its mailbox, in sequence order: with `all` every
-- reservation (a newer poll takes over what older ones handed out), else those whose lease ran
-- out.
local function reclaim(c, all, keep_ms)
  if all then
    if redis.call('ZCARD', R(c)) > 0 then
      redis.call('ZUNIONSTORE', M(c), 2, M(c), R(c))
      redis.call('DEL', R(c))
      expire_remade(M(c), keep_ms)
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

-- Reserves the messages `add` (`seq, member, ...`, in sequence order) for connection `c` under
-- `receipt`: one reservation per poll, made with a lease of `lease` ms, whether a take took
-- its messages or a deliver handed them over.
local function reserve(c, receipt, lease, add, keep_ms)
  local list = reservations(c)
  redis.call('ZADD', R(c), unpack(add))
  -- Nothing reserved before: the reservations' key is new.
  if #list == 0 then expire_new(R(c), keep_ms) end
  local r, entry = int(receipt), nil
  for _, parts in ipairs(list) do
    if parts[1] == r then entry = parts end
  end
  if not entry then
    entry = {r, int(now + lease)}
    list[#list + 1] = entry
  end
  for i = 1, #add, 2 do entry[#entry + 1] = add[i] end
  store_reservations(c, list)
end

-- The messages reserved for `c` under `receipt`, oldest first: those a deliver handed over to
-- the poll in its wake-up, which the poll's node may not have heard.
local function reserved_for(c, receipt)
  local r, out = int(receipt), {}
  for _, parts in ipairs(reservations(c)) do
    if parts[1] == r then
      for _, range in ipairs(ranges(parts)) do
        for _, m in ipairs(redis.call('ZRANGEBYSCORE', R(c), range[1], range[2])) do
          out[#out + 1] = m
        end
      end
    end
  end
  return out
end

-- Whether a pop of up to `limit` messages that got `popped` (fresh or expired) emptied the
-- mailbox: fewer than it asked for. A poll that leaves its mailbox so emptied says so (`e:c`),
-- and mail to it is then handed over or stored without counting the mailbox.
local function emptied(limit, popped)
  return limit > 0 and popped < limit
end

-- Pops up to `limit` messages from mailbox `box` and returns the fresh ones, the same as
-- `ZADD` arguments (sequence number, message), and how many had expired (dropped). An empty
-- mailbox, as most polls find it, answers with `ZPOPMIN`'s own empty reply.
local function pop_fresh(box, limit, ttl)
  local ms = redis.call('ZPOPMIN', box, limit)
  if #ms == 0 then return ms, ms, 0 end
  local out, add = {}, {}
  for i = 1, #ms, 2 do
    if fresh(ms[i], ttl) then
      out[#out + 1] = ms[i]
      add[#add + 1] = ms[i + 1]
      add[#add + 1] = ms[i]
    end
  end
  return out, add, #ms / 2 - #out
end

-- Takes the whole mailbox `box` for a connection with nothing reserved, whose reservations'
-- key `held` therefore does not exist: when all of it fits in `limit` and none of it expired,
-- the mailbox becomes that key (RENAMENX carries its messages and its TTL, which is at least
-- what every key of the connection has: see `keep`), one command where popping, reserving and
-- giving the new key its TTL are three. Returns its messages, oldest first, and their
-- sequence numbers (both empty for an empty mailbox); nothing when it cannot, and the caller
-- pops as before.
local function take_whole(box, held, limit, ttl)
  local ms = redis.call('ZRANGE', box, 0, limit)
  if #ms == 0 then return ms, ms end
  if #ms > limit then return nil end
  local seqs = {}
  for i = 1, #ms do
    local m = ms[i]
    if not fresh(m, ttl) then return nil end
    seqs[i] = string.sub(m, 1, string.find(m, '|', 1, true) - 1)
  end
  -- (never over a reservations' key that exists: `v:c` not listing it is no proof)
  if redis.call('RENAMENX', box, held) == 0 then return nil end
  -- (taken whole)
  return ms, seqs
end

-- Reserves up to `limit` messages of `c` under `receipt` for `lease` ms and returns them, and
-- how many of those read had expired (dropped instead).
local function take(c, receipt, limit, lease, ttl, keep_ms)
  if limit <= 0 then return {}, 0 end
  if #reservations(c) == 0 then
    local ms, seqs = take_whole(M(c), R(c), limit, ttl)
    if seqs then
      if #ms > 0 then
        -- The mailbox is gone and the reservations' key has its TTL.
        made[M(c)], made[R(c)] = nil, true
        local entry = {int(receipt), int(now + lease)}
        for i = 1, #seqs do entry[#entry + 1] = seqs[i] end
        store_reservations(c, {entry})
      end
      return ms, 0
    end
  end
  local out, add, expired = pop_fresh(M(c), limit, ttl)
  if #out > 0 then reserve(c, receipt, lease, add, keep_ms) end
  return out, expired
end

-- Milliseconds until the first lease of `c`'s reservations runs out; 0 when there are none.
local function lease_left(c)
  local first = nil
  for _, parts in ipairs(reservations(c)) do
    local at = num(parts[2])
    if not first or at < first then first = at end
  end
  if not first then return 0 end
  return math.max(first - now, 1)
end

-- Connection activity (the score in CONNS, which orders eviction) is written unless the
-- connection is already the most recently active one (field `la`) and its score is younger
-- than this many ms (field `a:c`); forgetting an idle connection allows for that lag, so none
-- is forgotten early, and the eviction order is exact.
local ACTIVITY_STEP = 1000

-- Records activity of connection `c` (opened, polled, handed out). A connection new to the set
-- may have made it anew (a take naming a connection no poll opened), which then gets its TTL.
local function touch(c, keep_ms)
  if get('la') == c and num(get('a:' .. c)) + ACTIVITY_STEP > now then return end
  if redis.call('ZADD', CONNS, int(now), c) == 1 then expire_new(CONNS, keep_ms) end
  set('la', c)
  set('a:' .. c, now)
end
