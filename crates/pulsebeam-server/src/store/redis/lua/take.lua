-- For the poll `generation` of connection `conn`: hands out what is waiting (up to `max`; 0
-- takes nothing): first what delivers handed over to this poll (its node may have missed the
-- wake-up that carried it), then reservations whose lease ran out and newer mail; ends the poll
-- when it got messages or `last` says it is over. SUPERSEDED when a newer poll of the
-- connection took over.
enter(h, conns, d, boxes, base)
now = now_ms()
-- Every reply, OK or not, writes the hash and keeps the peer's keys' TTLs.
on_reply = function() keep(keep_ms) end
fetch({'k', 'la', 'g:' .. conn, 'k:' .. conn, 'v:' .. conn, 'a:' .. conn, 'e:' .. conn})
if num(get('g:' .. conn)) ~= generation then
  return reply{status = S.SUPERSEDED}
end
reclaim(conn, false, keep_ms)
local out, expired = {}, 0
-- (what was reserved for this poll, and what it took from the mailbox)
local reserved, taken = 0, 0
if max > 0 then
  out = reserved_for(conn, generation)
  reserved = #out
  local more
  more, expired = take(conn, generation, max - reserved, ack_lease_ms, ttl_ms, keep_ms)
  taken = #more
  for _, m in ipairs(more) do out[#out + 1] = m end
end
local left = 0
if #out > 0 or last then
  set('l:' .. conn, 0)
  touch(conn, keep_ms)
else
  left = lease_left(conn)
end
-- Whether the poll left its mailbox empty (`e:c`, begin.lua): a reclaim may have filled it.
local empty = emptied(max - reserved, taken + expired) and generation or 0
if num(get('e:' .. conn)) ~= empty then set('e:' .. conn, empty) end
keep(keep_ms, conn)
return reply({status = S.OK, expired = expired, lease_left_ms = left}, out)
