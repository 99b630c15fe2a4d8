-- Stores `stored` (`until|json`) for `target` in `all` unless the revocation held for it lasts
-- as long or longer: a longer revocation wins. Returns the one in force; a change bumps
-- `version`.
local cur = redis.call('HGET', all, target)
if cur then
  local u = tonumber(string.match(cur, '^(%d+)|'))
  if u and u >= until_secs then return reply{in_force = cur} end
end
redis.call('HSET', all, target, stored)
redis.call('INCR', version)
return reply{in_force = stored}
