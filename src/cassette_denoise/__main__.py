from cassette_denoise.cli import main

raise SystemExit(main())
