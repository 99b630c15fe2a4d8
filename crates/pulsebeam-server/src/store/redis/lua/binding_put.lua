-- Binds `binding` to `credential` for `keep_ms`; a keep of 0 removes the binding.
if keep_ms <= 0 then
  redis.call('DEL', binding)
else
  redis.call('SET', binding, credential, 'PX', keep_ms)
end
return reply{}
