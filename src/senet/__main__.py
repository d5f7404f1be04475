from senet.cli import main

raise SystemExit(main())
