from mcp_server.cli import main

# Guarded: the local simulator's worker processes are spawned, and spawning re-imports __main__.
if __name__ == "__main__":
    main()
