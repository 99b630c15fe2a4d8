-- Deletes what the polls with `receipts` of connection `conn` handed out.
if FAST_PATH and #receipts == 1 then
  -- The common case in straight-line code: one receipt, and at most one reservation stored
  -- (this receipt's, as a Twirp `Recv` acknowledges its last batch). It does what the general
  -- path below does in that case; with more reservations it hands over to it.
  local field = 'v:' .. conn
  local v = redis.call('HGET', h, field)
  if not v or not string.find(v, ';', 1, true) then
    -- (the fast path)
    local parts = v and words(v) or {}
    if parts[1] ~= receipts[1] then return reply{acknowledged = 0} end
    local n = 0
    for _, r in ipairs(ranges(parts)) do
      n = n + redis.call('ZREMRANGEBYSCORE', base .. 'r:' .. conn, r[1], r[2])
    end
    redis.call('HSET', h, field, '')
    return reply{acknowledged = n}
  end
end
enter(h, conns, d, boxes, base)
local n = 0
for _, receipt in ipairs(receipts) do n = n + ack(conn, receipt) end
return reply{acknowledged = n}
