-- The HTTP floor: GET / on a bare aiohttp server that answers a fixed 200.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

function init(args)
  seed_thread()
end

function request()
  return wrk.format("GET", "/")
end
