-- One peer's keys, its hash and its reservations, for every mailbox script (store/redis/mod.rs
-- describes the keys; hold.lua and conns.lua have the helpers only some scripts need). Every key a script touches is declared: the peer's hash, connection set and discovery
-- queue, and the keys (`boxes`) of each connection the caller named; a script that needs
-- another connection's keys touches nothing and answers NEED_KEYS naming it, and the node
-- calls again with them. No helper reads a whole mailbox: what a call reads is bounded by what
-- it hands out (and a few members more), however full the mailboxes are.
--
-- What a call costs Redis is counted in commands, so the peer's hash is read once (HMGET of
-- the fields the script names up front, `fetch`) and written once (`flush`, on every reply):
-- `get` and `set` work on that copy. Key TTLs are given when a key is made and refreshed only
-- when less than a keep span is left (`keep`).

-- A call's state. Helpers are defined once (a Redis Functions library loads them once; an
-- EVALSHA defines them on every call), so what belongs to one call lives in these and `enter`
-- sets them when the call begins.
-- Redis server time (ms); set by every script that needs it (`now = now_ms()`), not by ack.
local now = 0
-- The peer's hash, connection set and discovery queue, and the prefix of its keys.
local H, CONNS, D, BASE = nil, nil, nil, nil
-- The keys of connections the caller declared, as given (`BOXES`) and as a set made by the
-- first `has` of a call (most calls ask none).
local BOXES, DECLARED = {}, nil
-- The hash's fields as read (false when absent) and those changed since.
local cache, dirty = {}, {}
-- Keys made by this call, which got their TTL (`expire_new`, hold.lua).
local made = {}
-- Connections' reservations as parsed by this call (`reservations`), kept as they are stored.
local parsed = {}

local function M(c) return BASE .. 'm:' .. c end
local function R(c) return BASE .. 'r:' .. c end
local function RV(c) return BASE .. 'rv:' .. c end
-- Whether the keys of connection `c` are declared.
local function has(c)
  if not DECLARED then
    DECLARED = {}
    for _, k in ipairs(BOXES) do DECLARED[k] = true end
  end
  return DECLARED[M(c)] and DECLARED[R(c)] and DECLARED[RV(c)] or false
end

-- The fields `n` (9 to 16) with their values `v`, in a table made at its size: a table
-- constructor sizes it once, where one filled field by field is resized at every power of two,
-- every field it holds moved each time (9k of the 290k instructions of a deliver). The keys
-- past the list are numbers, which no field is.
local function sized(n, v)
  return {
    [n[1] or 1] = v[1], [n[2] or 2] = v[2], [n[3] or 3] = v[3], [n[4] or 4] = v[4],
    [n[5] or 5] = v[5], [n[6] or 6] = v[6], [n[7] or 7] = v[7], [n[8] or 8] = v[8],
    [n[9] or 9] = v[9], [n[10] or 10] = v[10], [n[11] or 11] = v[11], [n[12] or 12] = v[12],
    [n[13] or 13] = v[13], [n[14] or 14] = v[14], [n[15] or 15] = v[15], [n[16] or 16] = v[16]}
end

-- Reads the fields `names` not read yet, in one HMGET.
local function fetch(names)
  if next(cache) == nil then
    local vals = redis.call('HMGET', H, unpack(names))
    if #names > 8 and #names <= 16 then
      cache = sized(names, vals)
      return
    end
    for i, n in ipairs(names) do cache[n] = vals[i] end
    return
  end
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

-- Writes the changed fields: one HSET, and one HDEL when some were deleted. (Every table
-- a call makes costs it about as much as a command: none is made for nothing to write.)
local function flush()
  if next(dirty) == nil then return end
  local put, del = {}, nil
  for n in pairs(dirty) do
    local v = cache[n]
    if type(v) == 'number' then v = int(v) end
    if v then
      put[#put + 1] = n
      put[#put + 1] = v
    else
      del = del or {}
      del[#del + 1] = n
    end
  end
  dirty = {}
  if #put > 0 then redis.call('HSET', H, unpack(put)) end
  if del then redis.call('HDEL', H, unpack(del)) end
end

-- Begins a call on the peer whose hash, connection set and discovery queue are `h`, `conns`
-- and `d`, with connections' keys `boxes` declared and keys prefixed by `base`; every reply
-- writes the hash (a script may set `on_reply` to do more first).
local function enter(h, conns, d, boxes, base)
  H, CONNS, D, BASE, BOXES, DECLARED = h, conns, d, base, boxes, nil
  cache, dirty, made, parsed = {}, {}, {}, {}
  on_reply = flush
end

-- Reservations. Field `v:c` of the hash lists connection c's polls whose messages wait for an
-- acknowledgement, `receipt expiry seq seq ...` each, separated by ';' (empty, or absent, when
-- none). Parsed once per call: a caller that changes the list stores it (`store_reservations`).
local function reservations(c)
  if parsed[c] then return parsed[c] end
  local out = {}
  local v = get('v:' .. c)
  if v then
    for entry in string.gmatch(v, '[^;]+') do out[#out + 1] = words(entry) end
  end
  parsed[c] = out
  return out
end

local function store_reservations(c, list)
  parsed[c] = list
  if #list == 0 then
    -- Emptied, not deleted: the hash's write stays one HSET (no HDEL) when the last
    -- reservation is acknowledged, as most polls' are.
    local v = get('v:' .. c)
    if v and v ~= '' then set('v:' .. c, '') end
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
    local s = num(parts[j])
    local prev = out[#out]
    if prev and s == prev[2] + 1 then prev[2] = s else out[#out + 1] = {s, s} end
  end
  return out
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
