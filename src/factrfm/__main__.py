from factrfm.cli import main

raise SystemExit(main())
