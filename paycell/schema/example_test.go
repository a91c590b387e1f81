package schema_test

import (
	"context"
	"fmt"

	"github.com/cellkit/cellkit/infra/sqldb"
	"github.com/cellkit/cellkit/paycell/schema"
)

func Example() {
	ctx := context.Background()
	db, dialect, err := sqldb.Open(ctx, "sqlite::memory:")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	// Twice: the second run finds nothing to do.
	for range 2 {
		if err := schema.Migrate(ctx, db, dialect); err != nil {
			panic(err)
		}
	}
	v, _ := schema.Version(ctx, db)
	fmt.Println("schema version", v)
	// What a data mover copies by slot and owner:
	for _, t := range schema.SlotTables {
		fmt.Println(t.Name, t.Key)
	}
	// Output:
	// schema version 1
	// accounts [owner]
	// orders [order_id]
	// txns [txn_id]
	// entries [txn_id leg]
	// bank_ops [op_id]
	// requests [owner request_id]
}
