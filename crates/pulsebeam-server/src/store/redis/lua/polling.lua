-- Which of the peer's connections `asked` have a poll in flight.
local out = {}
for _, c in ipairs(asked) do
  if num(redis.call('HGET', H, 'l:' .. c)) > now then out[#out + 1] = c end
end
return reply({}, out)
