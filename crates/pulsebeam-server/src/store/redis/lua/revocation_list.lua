-- The revocations in `all` holding after `now_secs`; those run out are deleted.
local held = redis.call('HGETALL', all)
local out = {}
for i = 1, #held, 2 do
  local value = held[i + 1]
  local u = tonumber(string.match(value, '^(%d+)|'))
  if u and u > now_secs then
    out[#out + 1] = value
  else
    redis.call('HDEL', all, held[i])
  end
end
return reply({}, out)
