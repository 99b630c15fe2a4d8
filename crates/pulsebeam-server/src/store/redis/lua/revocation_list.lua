-- The revocations holding after ARG.now_secs; those run out are deleted.
local all = redis.call('HGETALL', KEY.all)
local out = {}
for i = 1, #all, 2 do
  local stored = all[i + 1]
  local u = tonumber(string.match(stored, '^(%d+)|'))
  if u and u > ARG.now_secs then
    out[#out + 1] = stored
  else
    redis.call('HDEL', KEY.all, all[i])
  end
end
return reply({}, out)
