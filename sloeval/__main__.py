from sloeval.cli import main

raise SystemExit(main())
