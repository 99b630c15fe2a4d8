-- For the poll `generation` of connection `conn`: hands out what is waiting (up to `max`; 0
-- takes nothing), and ends the poll when it got messages or `last` says it is over.
-- SUPERSEDED when a newer poll of the connection took over.
if num(redis.call('HGET', H, 'g:' .. conn)) ~= generation then
  return reply{status = S.SUPERSEDED}
end
local expired = expire(M(conn), ttl_ms) + expire(R(conn), ttl_ms)
reclaim(conn)
local out = {}
if max > 0 then out = take(conn, generation, max, ack_lease_ms) end
if #out > 0 or last then
  redis.call('HSET', H, 'l:' .. conn, 0)
  redis.call('ZADD', CONNS, now, conn)
end
keep(keep_ms, conn)
return reply({status = S.OK, expired = expired}, out)
