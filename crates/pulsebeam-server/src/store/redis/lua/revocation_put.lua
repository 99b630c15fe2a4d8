-- Stores ARG.stored (`until|json`) for ARG.target unless the revocation held for it lasts as
-- long or longer: a longer revocation wins. Returns the one in force.
local cur = redis.call('HGET', KEY.all, ARG.target)
if cur then
  local u = tonumber(string.match(cur, '^(%d+)|'))
  if u and u >= ARG.until_secs then return reply{in_force = cur} end
end
redis.call('HSET', KEY.all, ARG.target, ARG.stored)
redis.call('INCR', KEY.version)
return reply{in_force = ARG.stored}
