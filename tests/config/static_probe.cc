// A program linked with -static: `xsock run` must warn that nothing in it is intercepted.
int main() { return 0; }
