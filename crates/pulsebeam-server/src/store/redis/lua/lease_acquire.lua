-- Takes `lease` for `holder`, or renews it if `holder` holds it, for `ms`. `renewed` says the
-- holder held it without a break; taken afresh, someone else may have held it meanwhile.
local current = redis.call('GET', lease)
if current == false then
  redis.call('SET', lease, holder, 'PX', ms)
  return reply{held = true, renewed = false}
end
if current == holder then
  redis.call('PEXPIRE', lease, ms)
  return reply{held = true, renewed = true}
end
return reply{held = false}
