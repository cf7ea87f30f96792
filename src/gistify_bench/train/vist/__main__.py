from gistify_bench.train.vist.loop import main

raise SystemExit(main())
