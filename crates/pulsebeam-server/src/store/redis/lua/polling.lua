-- Which of the peer's connections `asked` have a poll in flight.
enter(h, conns, d, boxes, base)
now = now_ms()
local names = {}
for _, c in ipairs(asked) do names[#names + 1] = 'l:' .. c end
if #names > 0 then fetch(names) end
local out = {}
for _, c in ipairs(asked) do
  if num(get('l:' .. c)) > now then out[#out + 1] = c end
end
return reply({}, out)
