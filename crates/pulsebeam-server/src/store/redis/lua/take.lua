-- For the poll ARG.generation of connection ARG.conn: hands out what is waiting (up to ARG.max;
-- 0 takes nothing), and ends the poll when it got messages or ARG.last says it is over.
-- SUPERSEDED when a newer poll of the connection took over.
local c, ttl = ARG.conn, ARG.ttl_ms
if num(redis.call('HGET', H, 'g:' .. c)) ~= ARG.generation then
  return reply{status = S.SUPERSEDED}
end
local expired = expire(M(c), ttl) + expire(R(c), ttl)
reclaim(c)
local out = {}
if ARG.max > 0 then out = take(c, ARG.generation, ARG.max, ARG.ack_lease_ms) end
if #out > 0 or ARG.last then
  redis.call('HSET', H, 'l:' .. c, 0)
  redis.call('ZADD', CONNS, now, c)
end
keep(ARG.keep_ms, c)
return reply({status = S.OK, expired = expired}, out)
